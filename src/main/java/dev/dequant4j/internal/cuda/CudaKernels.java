package dev.dequant4j.internal.cuda;

import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Const;
import org.bytedeco.javacpp.annotation.Name;
import org.bytedeco.javacpp.annotation.Platform;

/**
 * The JavaCPP binding of {@code native/dequant4j_cuda.h}: the kernel launchers and their two structs. Device
 * pointers and streams are passed as raw addresses ({@code long}), so this class needs nothing from the CUDA
 * presets and loads on a machine without a driver (a launch then returns an error code).
 *
 * <p>Nothing is loaded when this class initializes: {@link CudaRuntime} calls {@link Loader#load(Class)} itself so
 * that a missing library becomes a reason, not an {@link ExceptionInInitializerError}.
 */
// No preload of libcudart.so.13: JavaCPP would copy the toolkit's runtime into our jar. The CUDA presets load the
// system's runtime first (CudaRuntime), and our library's NEEDED entry then resolves to that same one.
@Platform(value = "linux-x86_64", include = "dequant4j_cuda.h", link = "dequant4j_cuda",
        library = "jnidequant4j_cuda")
public final class CudaKernels {
    private CudaKernels() {}

    public static final int ABI_VERSION = 1;

    public static final int F32 = 0;
    public static final int F16 = 1;
    public static final int BF16 = 2;
    public static final int F64 = 3;

    public static final int SRC_4BIT = 1;
    public static final int SRC_INT8 = 2;
    public static final int SRC_PLAIN = 3;

    public static final int STEP_LORA = 1;
    public static final int STEP_DORA_ROW = 2;
    public static final int STEP_DORA_COL = 3;
    public static final int STEP_ADD_SCALED = 4;
    public static final int STEP_REPLACE_ROWS = 5;

    public static final int MERGE_FMA = 1;

    public static final int OK = 0;
    public static final int ERR_INVALID_ARGUMENT = -1;
    public static final int ERR_MISALIGNED = -2;
    public static final int ERR_TOO_MANY_STEPS = -3;

    public static final int MAX_STEPS = 16;
    public static final int TILE_ROWS = 32;
    public static final int TILE_COLS = 256;

    /** {@code dq4j_source}: where the base values of a range of a tensor come from (see the header). */
    @Name("dq4j_source")
    public static final class Source extends Pointer {
        static {
            Loader.load();
        }

        public Source() {
            super((Pointer) null);
            allocate();
        }

        private native void allocate();

        public native int kind();

        public native Source kind(int kind);

        public native int dtype();

        public native Source dtype(int dtype);

        public native int block_shift();

        public native Source block_shift(int shift);

        public native int nested();

        public native Source nested(int nested);

        public native long elem0();

        public native Source elem0(long elem0);

        public native long cols();

        public native Source cols(long cols);

        public native @Cast("const void*") long data();

        public native Source data(@Cast("const void*") long address);

        public native @Cast("const float*") long absmax();

        public native Source absmax(@Cast("const float*") long address);

        public native @Cast("const uint8_t*") long absmax_code();

        public native Source absmax_code(@Cast("const uint8_t*") long address);

        public native @Cast("const float*") long nested_map();

        public native Source nested_map(@Cast("const float*") long address);

        public native @Cast("const float*") long nested_absmax();

        public native Source nested_absmax(@Cast("const float*") long address);

        public native @Cast("const float*") long scb();

        public native Source scb(@Cast("const float*") long address);

        public native float nested_offset();

        public native Source nested_offset(float offset);

        public native float code(int i);

        public native Source code(int i, float value);
    }

    /** {@code dq4j_step}: one merge step; an array of them is allocated with {@link #Step(long)}. */
    @Name("dq4j_step")
    public static final class Step extends Pointer {
        static {
            Loader.load();
        }

        public Step(long count) {
            super((Pointer) null);
            allocateArray(count);
        }

        private native void allocateArray(long count);

        public native int kind();

        public native Step kind(int kind);

        public native int r();

        public native Step r(int r);

        public native float scale();

        public native Step scale(float scale);

        public native int reserved();

        public native Step reserved(int reserved);

        public native @Cast("const float*") long left();

        public native Step left(@Cast("const float*") long address);

        public native @Cast("const float*") long right();

        public native Step right(@Cast("const float*") long address);

        public native @Cast("const float*") long factor();

        public native Step factor(@Cast("const float*") long address);

        public native @Cast("const float*") long values();

        public native Step values(@Cast("const float*") long address);

        public native @Cast("const int32_t*") long row_map();

        public native Step row_map(@Cast("const int32_t*") long address);
    }

    public static native int dq4j_abi_version();

    public static native long dq4j_sizeof_source();

    public static native long dq4j_sizeof_step();

    public static native @Cast("const char*") String dq4j_error_string(int code);

    public static native int dq4j_dequant(@Const Source src, long n, int outDtype, @Cast("void*") long out,
                                          @Cast("void*") long stream);

    public static native int dq4j_merge(@Const Source src, long row0, long rows, long cols, @Const Step steps,
                                        int nsteps, int flags, int outDtype, @Cast("void*") long out,
                                        @Cast("void*") long stream);

    public static native int dq4j_dora_norms(@Const Source src, long row0, long rows, long cols, @Const Step steps,
                                             int nsteps, int step, int flags, @Cast("double*") long partials,
                                             @Cast("void*") long stream);

    public static native int dq4j_dora_row_factors(@Cast("const double*") long partials, long rows, long colTiles,
                                                   @Cast("const float*") long magnitude,
                                                   @Cast("float*") long factor, @Cast("void*") long stream);

    public static native int dq4j_dora_col_accumulate(@Cast("const double*") long partials, long rowTiles,
                                                      long cols, @Cast("double*") long colSums,
                                                      @Cast("void*") long stream);

    public static native int dq4j_dora_col_factors(@Cast("const double*") long colSums, long cols,
                                                   @Cast("const float*") long magnitude,
                                                   @Cast("float*") long factor, @Cast("void*") long stream);
}
