package dev.dequant4j;

/**
 * Where the work of an export runs. {@link #AUTO} uses CUDA when a usable GPU and the natives are there, the CPU
 * otherwise, and says why ({@link #describe()}).
 */
public enum Backend {
    AUTO, CPU, CUDA
}
