package dev.dequant4j;

/**
 * What an export did to one tensor: where it came from, and, for merged tensors, how much the adapters changed it
 * ({@code delta} is the merged float32 value minus the base float32 value).
 *
 * @param maxAbsDelta   largest |delta| (0 for unmerged tensors; NaN where not measured: tensors merged on the CUDA
 *                      backend, which returns only the rounded output)
 * @param relDeltaNorm  ||delta|| / ||W|| over the whole tensor (0 for unmerged tensors; infinite if W is all zero;
 *                      NaN where not measured)
 */
public record TensorStats(String name, QuantKind sourceKind, DType dtype, long[] shape, int mergeSteps,
                          double maxAbsDelta, double relDeltaNorm) {
    public TensorStats {
        shape = shape.clone();
    }

    @Override
    public long[] shape() {
        return shape.clone();
    }
}
