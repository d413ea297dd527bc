package dev.dequant4j;

import java.nio.file.Path;
import java.util.Arrays;

/** A tensor exactly as stored in a safetensors file, including bitsandbytes component keys. */
public final class StoredTensor {
    private final String name;
    private final DType dtype;
    private final long[] shape;
    private final long byteSize;
    private final Path file;
    private final long fileOffset;

    StoredTensor(String name, DType dtype, long[] shape, long byteSize, Path file, long fileOffset) {
        this.name = name;
        this.dtype = dtype;
        this.shape = shape.clone();
        this.byteSize = byteSize;
        this.file = file;
        this.fileOffset = fileOffset;
    }

    /** {@return the key in the safetensors header} */
    public String name() {
        return name;
    }

    /** {@return the stored dtype} */
    public DType dtype() {
        return dtype;
    }

    /** {@return a copy of the stored shape} */
    public long[] shape() {
        return shape.clone();
    }

    /** {@return the number of bytes stored} */
    public long byteSize() {
        return byteSize;
    }

    /** {@return the safetensors file that holds it} */
    public Path file() {
        return file;
    }

    /** {@return the absolute offset of its first byte in {@link #file()}} */
    public long fileOffset() {
        return fileOffset;
    }

    @Override
    public String toString() {
        return name + " " + dtype + Arrays.toString(shape);
    }
}
