"""Benchmarks of textvision against the references it replaces: the original code's loops and
pyDeepInsight. `python -m bench` (from the repository root) runs the whole table and prints it as
Markdown; `python -m bench --help` lists the sizes. Results and the machine are in
bench/README.md.

Every timed run happens in a fresh subprocess (`python -m bench.worker`), so that peak memory
(`VmHWM` of /proc/self/status, reset right before the timed section) and warm caches of one run
never leak into another; reference and ours alternate, and each figure is the median of the runs.
"""
