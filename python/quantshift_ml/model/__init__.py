"""What a regime model is and computes: features, labels, the HMM, the regime rule and
model, the compiled (ONNX) form and the filter spec. May import: store, data."""
