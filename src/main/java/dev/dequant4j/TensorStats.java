package dev.dequant4j;

/**
 * What an export did to one tensor: where it came from, and, for merged tensors, how much the adapters changed it
 * ({@code delta} is the merged float32 value minus the base float32 value).
 *
 * @param name          the tensor's name in the output
 * @param sourceKind    how the tensor was stored in the checkpoint
 * @param dtype         the dtype written
 * @param shape         the logical shape written
 * @param mergeSteps    how many adapter parts were merged into it (0: copied or dequantized only)
 * @param maxAbsDelta   largest |delta| (0 for unmerged tensors; NaN where not measured: tensors merged on the CUDA
 *                      backend, which returns only the rounded output)
 * @param relDeltaNorm  ||delta|| / ||W|| over the whole tensor (0 for unmerged tensors; infinite if W is all zero;
 *                      NaN where not measured)
 */
public record TensorStats(String name, QuantKind sourceKind, DType dtype, long[] shape, int mergeSteps,
                          double maxAbsDelta, double relDeltaNorm) {
    /** Copies {@code shape}, so that the record stays immutable. */
    public TensorStats {
        shape = shape.clone();
    }

    /** {@return a copy of the logical shape written} */
    @Override
    public long[] shape() {
        return shape.clone();
    }
}
