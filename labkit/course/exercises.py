"""labkit's own version of each exercise: the function a lab asks the student to write, by name, and the
module that holds it (``tests/test_one_formula.py`` checks this list against the solutions). Both review
layers use it: the static one to name what an answer reaches, the dynamic one (``kernel_side``) to see
whether a graded call ran one of these functions."""

LIBRARY_ANSWERS = {
    "to_unit_range": "labkit.data",
    "alpha_bars_from_betas": "labkit.schedules",
    "snr": "labkit.schedules",
    "q_sample": "labkit.diffusion",
    "forward_chain": "labkit.diffusion",
    "linear_betas": "labkit.schedules",
    "cosine_alpha_bars": "labkit.schedules",
    "predict_x0_from_eps": "labkit.diffusion",
    "q_posterior": "labkit.diffusion",
    "concat_skip": "labkit.unet",
    "upsample_merge": "labkit.unet",
    "ConvBlock": "labkit.unet",
    "ResBlock": "labkit.unet",
    "Down": "labkit.unet",
    "Up": "labkit.unet",
    "UNet": "labkit.unet",
    "sinusoidal_embedding": "labkit.embeddings",
    "cosine_similarity": "labkit.embeddings",
    "film": "labkit.unet",
    "TimeEmbedding": "labkit.embeddings",
    "ClassEmbedding": "labkit.embeddings",
    "ConvBlock": "labkit.unet",
    "ResBlock": "labkit.unet",
    "UNet": "labkit.unet",
    "noise_prediction_loss": "labkit.diffusion",
    "train_step": "labkit.training",
    "drop_labels": "labkit.training",
    "ema_update": "labkit.training",
    "train_loop": "labkit.training",
    "p_sample_step": "labkit.samplers",
    "sample_loop": "labkit.samplers",
    "zero_shot_probs": "labkit.evaluation.clip",
    "cfg_combine": "labkit.guidance",
    "ddim_step": "labkit.samplers",
    "dpmpp_2m_step": "labkit.samplers",
    "cfg_eps": "labkit.guidance",
    "ddim_loop": "labkit.samplers",
    "dpmpp_2m_loop": "labkit.samplers",
    "guided_eps": "labkit.clip_guidance",
    "classifier_grad": "labkit.guidance",
    "classifier_guided_loop": "labkit.samplers",
    "recognisable_from": "labkit.evaluation.measures",
    "quartiles_per_digit": "labkit.evaluation.measures",
    "relative_clip_score": "labkit.evaluation.measures",
    "within_class_diversity": "labkit.evaluation.measures",
    "speedup_at_quality": "labkit.evaluation.measures",
}

# What labkit lends an exercise (the lab says so in its text): both review layers leave these uses alone.
# Lab 03's UNet is assembled from labkit's Down and Up levels (lab 02's classes), given the student's ResBlock.
GIVEN = {
    "UNet": ("labkit.unet.Down", "labkit.unet.Up"),
    "classifier_guided_loop": ("labkit.samplers.p_sample_step",),  # lab 08's loop runs lab 05's step from labkit
}
