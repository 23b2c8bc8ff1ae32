"""Stage 5, `report`: every model's metrics beside the paper's, paired comparisons, costs and
figures."""
