"""Stage 3, `fit_mapping`, `render_images`, `plot_mapping`: DeepInsight, feature vectors -> images
(`mapping.h5`, `images.h5`)."""
