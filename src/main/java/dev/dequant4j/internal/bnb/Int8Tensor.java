package dev.dequant4j.internal.bnb;

import dev.dequant4j.DType;
import dev.dequant4j.QuantKind;
import dev.dequant4j.internal.cpu.Kernels;
import dev.dequant4j.internal.safetensors.TensorStore;
import java.util.List;

/**
 * A bitsandbytes LLM.int8 weight: int8 rows with a per-row absmax {@code SCB}, dequantized as bnb's
 * {@code int8_vectorwise_dequant}: {@code w = f32(f32(q * SCB[row]) * f32(1/127))}.
 */
public record Int8Tensor(String name, TensorStore.Ref weight, float[] scb, List<String> components, long storedBytes)
        implements LogicalTensor {
    @Override
    public QuantKind kind() {
        return QuantKind.INT8;
    }

    @Override
    public long[] shape() {
        return weight.entry().shape();
    }

    @Override
    public long numel() {
        return weight.entry().numel();
    }

    @Override
    public DType dtype() {
        return DType.F32;
    }

    @Override
    public DType storedDtype() {
        return DType.I8;
    }

    @Override
    public boolean isFloat() {
        return true;
    }

    @Override
    public void readF32(long start, float[] dst, int dstOff, int count) {
        Checks.range(this, start, count);
        if (count == 0) {
            return;
        }
        long cols = weight.entry().dim(1);
        Scratch scratch = Scratch.get();
        for (int piece = 0; piece < count; ) {
            int len = Scratch.piece(start + piece, count - piece);
            byte[] q = scratch.packed(len);
            weight.copyBytes(start + piece, q, 0, len);
            int done = 0;
            while (done < len) {
                long k = start + piece + done;
                int row = (int) (k / cols);
                int n = (int) Math.min(len - done, (long) (row + 1) * cols - k);
                Kernels.get().dequantInt8(q, done, n, scb[row], dst, dstOff + piece + done);
                done += n;
            }
            piece += len;
        }
    }
}
