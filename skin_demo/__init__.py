"""skin-demo: a research demo that classifies dermoscopy images with two ONNX models. Not a diagnosis."""
