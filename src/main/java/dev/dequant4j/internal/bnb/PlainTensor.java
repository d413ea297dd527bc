package dev.dequant4j.internal.bnb;

import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.QuantKind;
import dev.dequant4j.internal.cpu.Kernels;
import dev.dequant4j.internal.safetensors.TensorStore;
import java.util.List;

/** A tensor stored as is. Float types read as float32 exactly (F64 is rounded to nearest). */
public record PlainTensor(TensorStore.Ref ref) implements LogicalTensor {
    @Override
    public String name() {
        return ref.name();
    }

    @Override
    public QuantKind kind() {
        return QuantKind.PLAIN;
    }

    @Override
    public long[] shape() {
        return ref.entry().shape();
    }

    @Override
    public long numel() {
        return ref.entry().numel();
    }

    @Override
    public DType dtype() {
        return ref.entry().dtype();
    }

    @Override
    public DType storedDtype() {
        return ref.entry().dtype();
    }

    @Override
    public long storedBytes() {
        return ref.entry().byteSize();
    }

    @Override
    public List<String> components() {
        return List.of(ref.name());
    }

    @Override
    public boolean isFloat() {
        DType d = dtype();
        return d == DType.F32 || d == DType.F16 || d == DType.BF16 || d == DType.F64;
    }

    @Override
    public void readF32(long start, float[] dst, int dstOff, int count) {
        Checks.range(this, start, count);
        switch (dtype()) {
            case F32 -> ref.copyFloats(start * 4, dst, dstOff, count);
            case F16, BF16 -> {
                Scratch scratch = Scratch.get();
                for (int done = 0; done < count; ) {
                    int n = Scratch.piece(start + done, count - done);
                    short[] tmp = scratch.halves(n);
                    ref.copyShorts((start + done) * 2, tmp, 0, n);
                    if (dtype() == DType.F16) {
                        Kernels.get().f16ToF32(tmp, 0, dst, dstOff + done, n);
                    } else {
                        Kernels.get().bf16ToF32(tmp, 0, dst, dstOff + done, n);
                    }
                    done += n;
                }
            }
            case F64 -> {
                double[] tmp = new double[count];
                ref.copyDoubles(start * 8, tmp, 0, count);
                for (int i = 0; i < count; i++) {
                    dst[dstOff + i] = (float) tmp[i];
                }
            }
            default -> throw new Dequant4jException(Kind.INVALID_REQUEST, ref.path(), name(),
                    "dtype " + dtype() + " is not a float type and cannot be read as float32");
        }
    }
}
