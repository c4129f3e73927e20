"""The exported graphs' input and output names and the default opset (no PyTorch needed:
the ONNX Runtime backend opens a cached export without importing it)."""

# The whole network: frames, recurrent state and ratio in; foreground, alpha and state out.
INPUT_NAMES = ["src", "r1i", "r2i", "r3i", "r4i", "downsample_ratio"]
OUTPUT_NAMES = ["fgr", "pha", "r1o", "r2o", "r3o", "r4o"]
# Its working-resolution half, ending with the refiner's coefficients (rvmatte.runtime.kernels).
COEF_INPUT_NAMES = ["src_sm", "r1i", "r2i", "r3i", "r4i"]
COEF_OUTPUT_NAMES = ["a", "b", "r1o", "r2o", "r3o", "r4o"]
MIN_OPSET = 17
DEFAULT_OPSET = 17
