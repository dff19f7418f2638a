"""Running a model on a clip: loading weights and inputs (`loading`), what a forward pass exports and
costs (`extract`), and the training-free attention masks (`motion_cues`)."""
