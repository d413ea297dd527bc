package dev.dequant4j.internal.cuda;

import static org.bytedeco.cuda.global.cudart.cudaDriverGetVersion;
import static org.bytedeco.cuda.global.cudart.cudaErrorInsufficientDriver;
import static org.bytedeco.cuda.global.cudart.cudaErrorMemoryAllocation;
import static org.bytedeco.cuda.global.cudart.cudaErrorNoDevice;
import static org.bytedeco.cuda.global.cudart.cudaGetDeviceCount;
import static org.bytedeco.cuda.global.cudart.cudaGetDeviceProperties;
import static org.bytedeco.cuda.global.cudart.cudaGetErrorName;
import static org.bytedeco.cuda.global.cudart.cudaGetErrorString;
import static org.bytedeco.cuda.global.cudart.cudaMemGetInfo;
import static org.bytedeco.cuda.global.cudart.cudaRuntimeGetVersion;
import static org.bytedeco.cuda.global.cudart.cudaSetDevice;

import java.util.Locale;
import org.bytedeco.cuda.cudart.cudaDeviceProp;
import org.bytedeco.javacpp.SizeTPointer;

/** The device checks behind {@link CudaBackend#probe()}; used only once {@link CudaRuntime} has loaded everything. */
final class DeviceCheck {
    private DeviceCheck() {}

    /** cudaDriverGetVersion of the oldest driver that runs CUDA 13 code (r580). */
    static final int MIN_DRIVER_VERSION = 13000;
    /** Below this much free device memory a backend is not worth opening. */
    static final long MIN_FREE_BYTES = 64L << 20;

    /** A device that passed every check. */
    record Device(int index, String name, int major, int minor, long totalBytes, long freeBytes, int driverVersion,
                  int runtimeVersion) {
        String describe() {
            return String.format(Locale.ROOT, "device %d: %s (sm_%d%d, %.1f GiB, %.1f GiB free; driver CUDA %s, "
                            + "runtime %s)", index, name, major, minor, totalBytes / 1073741824.0,
                    freeBytes / 1073741824.0, version(driverVersion), version(runtimeVersion));
        }
    }

    /** A device, or why there is none. */
    record Check(Device device, String reason) {}

    /**
     * Checks device {@code index}: driver and device present, driver new enough, index in range, compute
     * capability 8.0+, a context can be created and has memory left. Makes it the calling thread's device.
     */
    static Check check(int index) {
        String failure = CudaRuntime.loadFailure();
        if (failure != null) {
            return new Check(null, failure);
        }
        if (index < 0) {
            return new Check(null, "-D" + CudaRuntime.DEVICE_PROPERTY + "="
                    + System.getProperty(CudaRuntime.DEVICE_PROPERTY) + " is not a device number");
        }
        int[] v = new int[1];
        int rc = cudaDriverGetVersion(v);
        if (rc != 0) {
            return new Check(null, "cudaDriverGetVersion failed: " + error(rc));
        }
        int driver = v[0];
        if (driver == 0) {
            return new Check(null, "no NVIDIA driver (cudaDriverGetVersion reports none)");
        }
        if (driver < MIN_DRIVER_VERSION) {
            return new Check(null, "NVIDIA driver too old for CUDA 13: it supports CUDA " + version(driver)
                    + "; the kernels need 13.0 (driver r580 or newer)");
        }
        rc = cudaRuntimeGetVersion(v);
        int runtime = rc == 0 ? v[0] : 0;
        rc = cudaGetDeviceCount(v);
        if (rc == cudaErrorNoDevice || (rc == 0 && v[0] == 0)) {
            return new Check(null, "no CUDA device" + (rc != 0 ? " (" + error(rc) + ")" : ""));
        }
        if (rc == cudaErrorInsufficientDriver) {
            return new Check(null, "NVIDIA driver too old for this CUDA runtime (" + error(rc) + ")");
        }
        if (rc != 0) {
            return new Check(null, "cudaGetDeviceCount failed: " + error(rc));
        }
        int count = v[0];
        if (index >= count) {
            return new Check(null, "requested device " + index + " (-D" + CudaRuntime.DEVICE_PROPERTY
                    + ") is out of range: " + count + " device" + (count == 1 ? "" : "s"));
        }
        try (cudaDeviceProp prop = new cudaDeviceProp(); SizeTPointer free = new SizeTPointer(1);
             SizeTPointer total = new SizeTPointer(1)) {
            rc = cudaGetDeviceProperties(prop, index);
            if (rc != 0) {
                return new Check(null, "cudaGetDeviceProperties(" + index + ") failed: " + error(rc));
            }
            String name = prop.name().getString().strip();
            if (prop.major() < 8) {
                return new Check(null, "device " + index + " (" + name + ") has compute capability " + prop.major()
                        + "." + prop.minor() + "; the kernels need 8.0 or newer");
            }
            rc = cudaSetDevice(index);
            if (rc == 0) {
                rc = cudaMemGetInfo(free, total);
            }
            if (rc == cudaErrorMemoryAllocation) {
                return new Check(null, "out of memory on device " + index + " (" + name
                        + "): cannot create a CUDA context (" + error(rc) + ")");
            }
            if (rc != 0) {
                return new Check(null, "cannot use device " + index + " (" + name + "): " + error(rc));
            }
            if (free.get() < MIN_FREE_BYTES) {
                return new Check(null, "out of memory on device " + index + " (" + name + "): " + (free.get() >> 20)
                        + " MiB free");
            }
            return new Check(new Device(index, name, prop.major(), prop.minor(), total.get(), free.get(), driver,
                    runtime), null);
        }
    }

    /** "cudaErrorNoDevice (100): no CUDA-capable device is detected". */
    static String error(int rc) {
        return cudaGetErrorName(rc).getString() + " (" + rc + "): " + cudaGetErrorString(rc).getString();
    }

    static String version(int v) {
        return v / 1000 + "." + v % 1000 / 10;
    }
}
