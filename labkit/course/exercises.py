"""labkit's own version of each exercise: the function a lab asks the student to write, by name, and the
module that holds it (``tests/test_one_formula.py`` checks this list against the solutions). Both review
layers use it: the static one to name what an answer reaches, the dynamic one (``kernel_side``) to see
whether a graded call ran one of these functions."""

LIBRARY_ANSWERS = {
    "to_unit_range": "labkit.data",
    "alpha_bars_from_betas": "labkit.schedules",
    "snr": "labkit.schedules",
    "q_sample": "labkit.diffusion",
    "concat_skip": "labkit.unet",
    "upsample_merge": "labkit.unet",
    "sinusoidal_embedding": "labkit.embeddings",
    "cosine_similarity": "labkit.embeddings",
    "film": "labkit.unet",
    "noise_prediction_loss": "labkit.diffusion",
    "train_step": "labkit.training",
    "drop_labels": "labkit.training",
    "ema_update": "labkit.training",
    "train_loop": "labkit.training",
    "p_sample_step": "labkit.samplers",
    "zero_shot_probs": "labkit.evaluation.clip",
    "cfg_combine": "labkit.guidance",
    "ddim_step": "labkit.samplers",
    "dpmpp_2m_step": "labkit.samplers",
    "guided_eps": "labkit.clip_guidance",
    "recognisable_from": "labkit.evaluation.measures",
    "quartiles_per_digit": "labkit.evaluation.measures",
    "relative_clip_score": "labkit.evaluation.measures",
    "within_class_diversity": "labkit.evaluation.measures",
    "speedup_at_quality": "labkit.evaluation.measures",
}
