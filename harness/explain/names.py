"""Names of the explain methods and built-in models, without importing torch or Captum.

Why: the command line lists them in ``--help``, and building the parser must not pay for
torch (seconds and hundreds of MB) in commands such as ``data ingest``. A test checks
these lists against the registries in :mod:`harness.explain.methods` and ``models``.
"""

METHOD_NAMES: tuple[str, ...] = (
    "gradient", "deconvolution", "guided_backprop", "smoothgrad", "input_x_gradient",
    "integrated_gradients", "deeplift", "gradient_shap", "grad_cam", "guided_grad_cam",
    "occlusion", "feature_ablation", "feature_permutation", "lime", "shapley_sampling", "kernel_shap",
)
MODEL_NAMES: tuple[str, ...] = ("multimodal_cnn", "multimodal_cnn3d")
