// A stand-in libcudart.so.13 for the host build of the kernels: one emulated device whose memory, streams, events
// and kernel launches live in this process, so that the JavaCPP presets' binding and dequant4j's kernels run
// unchanged on a machine without a GPU (docs/CUDA.md, "Host emulation").
//
// - Device memory: every allocation is its own mapping between inaccessible guard pages, filled with 0xFF (a NaN
//   in every float type) so that reading what was never written shows; intrinsic loads and stores (__ldg, __ldcs,
//   __stcs) are checked against the live allocations; freed memory becomes inaccessible and stays reserved for a
//   while (use after free faults); copies and memsets are checked against the allocations' bounds.
// - Streams run lazily: work runs only when the host waits for it (a synchronize, or an event it depends on),
//   and a stream waits for an event only by cudaStreamWaitEvent, so a missing dependency between streams, or host
//   memory reused before its copy ran, gives wrong bits instead of passing by luck.
// - Kernels: blocks run one after another (last first), the threads of a block as fibers that switch at
//   __syncthreads and warp shuffles; a barrier or shuffle some threads never reach is reported as a deadlock.
//   Errors during a kernel are sticky, as on a GPU: every later call fails with them.
#include "dq4j_emu.h"

#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <string>

namespace dq4j_emu {

Index thread_idx;
Index block_idx;
Index block_dim;
Index grid_dim;

namespace {

constexpr size_t TOTAL_MEMORY = size_t(16) << 30;
constexpr int SMS = 3;  // few, and odd: grid-stride loops go round several times
constexpr int MAX_THREADS = 1024;
constexpr size_t STACK_BYTES = size_t(256) << 10;
constexpr size_t DEFAULT_SHARED = 48 << 10;
constexpr size_t OPTIN_SHARED = 227 << 10;
constexpr size_t QUARANTINE_BYTES = size_t(1) << 30;

std::recursive_mutex big_lock;
thread_local cudaError_t last_error = cudaSuccess;
cudaError_t sticky = cudaSuccess;

cudaError_t fail(cudaError_t e) {
    last_error = e;
    return e;
}

void make_sticky(cudaError_t e, const std::string& why) {
    if (sticky == cudaSuccess) {
        sticky = e;
        fprintf(stderr, "dq4j emulated GPU: %s\n", why.c_str());
    }
}

// ---- memory -----------------------------------------------------------------------------------------------------

size_t page() {
    static const size_t p = (size_t)sysconf(_SC_PAGESIZE);
    return p;
}

size_t round_pages(size_t n) { return (n + page() - 1) / page() * page(); }

struct Alloc {
    size_t size;
    size_t mapped;  // the whole mapping, guards included
    char* base;     // start of the mapping
    bool freed;
};

std::map<uintptr_t, Alloc> device_allocs;  // by user address
std::deque<uintptr_t> quarantine;
size_t quarantined = 0;
size_t live_bytes = 0;
std::map<uintptr_t, size_t> pinned;

const Alloc* find_alloc(uintptr_t p) {
    auto it = device_allocs.upper_bound(p);
    if (it == device_allocs.begin()) {
        return nullptr;
    }
    --it;
    return p < it->first + it->second.size || (it->second.size == 0 && p == it->first) ? &it->second : nullptr;
}

// Whether [p, p + n) lies inside one live device allocation.
bool device_range(const void* p, size_t n) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    auto it = device_allocs.upper_bound(a);
    if (it == device_allocs.begin()) {
        return false;
    }
    --it;
    return !it->second.freed && a >= it->first && a + n <= it->first + it->second.size;
}

bool is_device(const void* p) {
    const Alloc* a = find_alloc(reinterpret_cast<uintptr_t>(p));
    return a != nullptr;
}

void reclaim() {
    while (quarantined > QUARANTINE_BYTES && !quarantine.empty()) {
        auto it = device_allocs.find(quarantine.front());
        quarantine.pop_front();
        if (it != device_allocs.end()) {
            quarantined -= it->second.mapped;
            munmap(it->second.base, it->second.mapped);
            device_allocs.erase(it);
        }
    }
}

// ---- streams and events -----------------------------------------------------------------------------------------

struct Stream;

struct Op {
    std::function<void()> run;
    Stream* wait_stream = nullptr;  // cudaStreamWaitEvent: run that stream up to wait_pos first
    uint64_t wait_pos = 0;
};

struct Stream {
    std::deque<Op> ops;
    uint64_t enqueued = 0;
    uint64_t done = 0;
    bool blocking = true;
};

struct Event {
    Stream* stream = nullptr;
    uint64_t pos = 0;
    bool timing = true;
    std::chrono::steady_clock::time_point when;
    bool happened = false;
};

Stream legacy;  // the NULL stream
std::map<Stream*, bool> streams = {{&legacy, true}};

Stream* stream_of(cudaStream_t s) { return s == nullptr ? &legacy : reinterpret_cast<Stream*>(s); }

bool valid_stream(cudaStream_t s) { return streams.count(stream_of(s)) != 0; }

void run_until(Stream* s, uint64_t pos) {
    while (s->done < pos && !s->ops.empty()) {
        Op op = std::move(s->ops.front());
        s->ops.pop_front();
        if (op.wait_stream != nullptr) {
            run_until(op.wait_stream, op.wait_pos);
        }
        if (op.run && sticky == cudaSuccess) {
            op.run();
        }
        s->done++;
    }
}

void run_all() {
    for (auto& e : streams) {
        run_until(e.first, e.first->enqueued);
    }
}

// The legacy stream waits for all blocking streams, and they for it: it runs everything pending first.
void enqueue(Stream* s, Op op) {
    if (s == &legacy) {
        for (auto& e : streams) {
            if (e.first->blocking) {
                run_until(e.first, e.first->enqueued);
            }
        }
    }
    s->ops.push_back(std::move(op));
    s->enqueued++;
}

// ---- fibers -----------------------------------------------------------------------------------------------------

enum State { RUNNABLE, AT_BARRIER, AT_SHUFFLE, EXITED };

struct Fiber {
    void* sp;
    State state;
};

struct Warp {
    int arrived;
    int live;
    uint64_t generation;
    uint64_t slots[2][32];
};

Fiber fibers[MAX_THREADS];
Warp warps[MAX_THREADS / 32];
char* stacks = nullptr;
void* scheduler_sp = nullptr;
int current = 0;
int nthreads = 0;
int live_threads = 0;
int barrier_arrived = 0;
bool aborted = false;
std::string abort_reason;
const std::function<void()>* body = nullptr;
std::string dynamic_shared_buffer;

extern "C" void dq4j_emu_switch(void** save_sp, void* to_sp);
extern "C" void dq4j_emu_trampoline();

// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack, stores the stack
// pointer to *save_sp, and resumes the context whose stack pointer is to_sp.
asm(R"(
    .text
    .globl dq4j_emu_switch
    .hidden dq4j_emu_switch
    .type dq4j_emu_switch, @function
dq4j_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size dq4j_emu_switch, .-dq4j_emu_switch

    .globl dq4j_emu_trampoline
    .hidden dq4j_emu_trampoline
    .type dq4j_emu_trampoline, @function
dq4j_emu_trampoline:
    callq *%r12
    ud2
    .size dq4j_emu_trampoline, .-dq4j_emu_trampoline
)");

void yield() { dq4j_emu_switch(&fibers[current].sp, scheduler_sp); }

void release_barrier() {
    barrier_arrived = 0;
    for (int t = 0; t < nthreads; t++) {
        if (fibers[t].state == AT_BARRIER) {
            fibers[t].state = RUNNABLE;
        }
    }
}

void release_warp(int w) {
    Warp& wp = warps[w];
    wp.arrived = 0;
    wp.generation++;
    for (int t = 32 * w; t < 32 * w + 32 && t < nthreads; t++) {
        if (fibers[t].state == AT_SHUFFLE) {
            fibers[t].state = RUNNABLE;
        }
    }
}

void fiber_main() {
    (*body)();
    Fiber& f = fibers[current];
    f.state = EXITED;
    live_threads--;
    Warp& w = warps[current / 32];
    w.live--;
    if (barrier_arrived > 0 && barrier_arrived == live_threads) {
        release_barrier();
    }
    if (w.arrived > 0 && w.arrived == w.live) {
        release_warp(current / 32);
    }
    yield();
    __builtin_unreachable();
}

void init_fiber(int t) {
    char* top = stacks + (size_t)(t + 1) * (STACK_BYTES + page());  // slot t: a guard page, then its stack
    uint64_t* sp = reinterpret_cast<uint64_t*>(top) - 8;  // 64 bytes: see dq4j_emu_switch's pops
    uint32_t csr[2];
    asm volatile("stmxcsr %0" : "=m"(csr[0]));
    asm volatile("fnstcw %0" : "=m"(*reinterpret_cast<uint16_t*>(&csr[1])));
    memcpy(&sp[0], csr, 8);
    sp[1] = 0;                                                // r15
    sp[2] = 0;                                                // r14
    sp[3] = 0;                                                // r13
    sp[4] = reinterpret_cast<uint64_t>(&fiber_main);          // r12
    sp[5] = 0;                                                // rbx
    sp[6] = 0;                                                // rbp
    sp[7] = reinterpret_cast<uint64_t>(&dq4j_emu_trampoline);  // return address
    fibers[t].sp = sp;
    fibers[t].state = RUNNABLE;
}

bool ensure_stacks() {
    if (stacks != nullptr) {
        return true;
    }
    const size_t slot = STACK_BYTES + page();
    void* m = mmap(nullptr, slot * MAX_THREADS + page(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
                   0);
    if (m == MAP_FAILED) {
        return false;
    }
    stacks = static_cast<char*>(m);
    for (int t = 0; t <= MAX_THREADS; t++) {
        mprotect(stacks + (size_t)t * slot, page(), PROT_NONE);  // a guard below every stack
    }
    return true;
}

std::string describe_waits() {
    int barrier = 0;
    int shuffle = 0;
    for (int t = 0; t < nthreads; t++) {
        barrier += fibers[t].state == AT_BARRIER;
        shuffle += fibers[t].state == AT_SHUFFLE;
    }
    return std::to_string(barrier) + " threads at __syncthreads, " + std::to_string(shuffle) + " at a shuffle, "
           + std::to_string(nthreads - live_threads) + " exited";
}

// Runs one block to completion; false (with abort_reason) on a deadlock or a bad access.
bool run_block() {
    for (int t = 0; t < nthreads; t++) {
        init_fiber(t);
    }
    for (int w = 0; w < (nthreads + 31) / 32; w++) {
        warps[w].arrived = 0;
        warps[w].generation = 0;
        warps[w].live = nthreads - 32 * w < 32 ? nthreads - 32 * w : 32;
    }
    live_threads = nthreads;
    barrier_arrived = 0;
    while (live_threads > 0) {
        bool progress = false;
        for (int t = 0; t < nthreads && !aborted; t++) {
            if (fibers[t].state == RUNNABLE) {
                current = t;
                thread_idx = Index{(unsigned)t % block_dim.x, (unsigned)t / block_dim.x, 0};
                dq4j_emu_switch(&scheduler_sp, fibers[t].sp);
                progress = true;
            }
        }
        if (aborted) {
            return false;
        }
        if (!progress) {
            abort_reason = "deadlock in block " + std::to_string(block_idx.x) + ": " + describe_waits();
            return false;
        }
    }
    return true;
}

struct LaunchConfigError {};

std::map<const void*, int> max_dynamic_shared;

}  // namespace

void syncthreads() {
    Fiber& f = fibers[current];
    if (++barrier_arrived == live_threads) {
        release_barrier();
        return;
    }
    f.state = AT_BARRIER;
    yield();
}

uint64_t exchange(uint64_t mine, int src) {
    const int w = current / 32;
    Warp& wp = warps[w];
    const int buf = (int)(wp.generation & 1);
    wp.slots[buf][current % 32] = mine;
    if (++wp.arrived == wp.live) {
        release_warp(w);
    } else {
        fibers[current].state = AT_SHUFFLE;
        yield();
    }
    return wp.slots[buf][src];
}

void* dynamic_shared() { return dynamic_shared_buffer.empty() ? nullptr : &dynamic_shared_buffer[0]; }

void check_access(const void* p, size_t bytes, bool write) {
    if (device_range(p, bytes) && reinterpret_cast<uintptr_t>(p) % bytes == 0) {
        return;
    }
    char buf[256];
    snprintf(buf, sizeof buf, "illegal %s of %zu bytes at %p by thread %u of block %u (%s)", write ? "store" : "load",
             bytes, p, thread_idx.x, block_idx.x,
             !device_range(p, bytes) ? (is_device(p) ? "freed or past the end" : "not device memory")
                                     : "misaligned");
    abort_reason = buf;
    aborted = true;
    yield();
    __builtin_unreachable();
}

cudaError_t launch(const void* kernel, dim3 grid, dim3 block, size_t shared, cudaStream_t stream,
                   std::function<void()> kernel_body) {
    std::lock_guard<std::recursive_mutex> g(big_lock);
    if (sticky != cudaSuccess) {
        return fail(sticky);
    }
    const size_t threads = (size_t)block.x * block.y * block.z;
    auto limit = max_dynamic_shared.find(kernel);
    const size_t max_shared = limit == max_dynamic_shared.end() ? DEFAULT_SHARED : (size_t)limit->second;
    if (grid.x == 0 || grid.y != 1 || grid.z != 1 || threads == 0 || threads > MAX_THREADS || block.z != 1) {
        return fail(cudaErrorInvalidConfiguration);
    }
    if (shared > max_shared) {
        return fail(cudaErrorInvalidValue);
    }
    if (!valid_stream(stream)) {
        return fail(cudaErrorInvalidResourceHandle);
    }
    Op op;
    op.run = [grid, block, shared, kernel_body]() {
        if (!ensure_stacks()) {
            make_sticky(cudaErrorLaunchOutOfResources, "cannot map fiber stacks");
            return;
        }
        nthreads = (int)(block.x * block.y);
        block_dim = Index{block.x, block.y, 1};
        grid_dim = Index{grid.x, 1, 1};
        dynamic_shared_buffer.assign(shared, '\xFF');
        body = &kernel_body;
        aborted = false;
        for (unsigned b = grid.x; b-- > 0;) {
            block_idx = Index{b, 0, 0};
            if (!run_block()) {
                make_sticky(cudaErrorIllegalAddress, abort_reason);
                break;
            }
        }
        body = nullptr;
    };
    enqueue(stream_of(stream), std::move(op));
    return cudaSuccess;
}

}  // namespace dq4j_emu

using namespace dq4j_emu;

namespace {

struct Guard {
    std::lock_guard<std::recursive_mutex> g{big_lock};
};

#define STICKY_CHECK()                \
    Guard guard_;                     \
    if (sticky != cudaSuccess) {      \
        return fail(sticky);          \
    }

Event* event_of(cudaEvent_t e) { return reinterpret_cast<Event*>(e); }

std::map<Event*, bool> events;

struct Leaks {
    ~Leaks() {
        size_t n = 0;
        for (auto& a : device_allocs) {
            n += !a.second.freed;
        }
        if (n > 0 || !pinned.empty()) {
            fprintf(stderr, "dq4j emulated GPU: at exit %zu device allocations (%zu bytes) and %zu pinned buffers "
                            "were never freed\n", n, live_bytes, pinned.size());
        }
    }
} leaks;

}  // namespace

extern "C" {

// ---- device and versions ----------------------------------------------------------------------------------------

cudaError_t cudaDriverGetVersion(int* v) {
    if (v == nullptr) {
        return fail(cudaErrorInvalidValue);
    }
    *v = 13000;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* v) {
    if (v == nullptr) {
        return fail(cudaErrorInvalidValue);
    }
    *v = 13000;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int* n) {
    if (n == nullptr) {
        return fail(cudaErrorInvalidValue);
    }
    *n = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice); }

cudaError_t cudaGetDevice(int* d) {
    if (d == nullptr) {
        return fail(cudaErrorInvalidValue);
    }
    *d = 0;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
    if (p == nullptr) {
        return fail(cudaErrorInvalidValue);
    }
    if (d != 0) {
        return fail(cudaErrorInvalidDevice);
    }
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "dequant4j host emulation (no GPU)");
    p->totalGlobalMem = TOTAL_MEMORY;
    p->sharedMemPerBlock = DEFAULT_SHARED;
    p->sharedMemPerBlockOptin = OPTIN_SHARED;
    p->regsPerBlock = 65536;
    p->warpSize = 32;
    p->maxThreadsPerBlock = MAX_THREADS;
    p->maxThreadsDim[0] = MAX_THREADS;
    p->maxThreadsDim[1] = MAX_THREADS;
    p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7FFFFFFF;
    p->maxGridSize[1] = 65535;
    p->maxGridSize[2] = 65535;
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = SMS;
    p->maxThreadsPerMultiProcessor = 2048;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int d) {
    if (v == nullptr) {
        return fail(cudaErrorInvalidValue);
    }
    if (d != 0) {
        return fail(cudaErrorInvalidDevice);
    }
    switch (attr) {
        case cudaDevAttrMultiProcessorCount:
            *v = SMS;
            return cudaSuccess;
        case cudaDevAttrMaxThreadsPerBlock:
            *v = MAX_THREADS;
            return cudaSuccess;
        case cudaDevAttrWarpSize:
            *v = 32;
            return cudaSuccess;
        case cudaDevAttrComputeCapabilityMajor:
            *v = 9;
            return cudaSuccess;
        case cudaDevAttrComputeCapabilityMinor:
            *v = 0;
            return cudaSuccess;
        case cudaDevAttrMaxSharedMemoryPerBlockOptin:
            *v = (int)OPTIN_SHARED;
            return cudaSuccess;
        default:
            return fail(cudaErrorInvalidValue);
    }
}

cudaError_t cudaDeviceSynchronize(void) {
    STICKY_CHECK();
    run_all();
    return sticky == cudaSuccess ? cudaSuccess : fail(sticky);
}

cudaError_t cudaDeviceReset(void) {
    Guard guard_;
    run_all();
    sticky = cudaSuccess;
    last_error = cudaSuccess;
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
    Guard guard_;
    cudaError_t e = sticky != cudaSuccess ? sticky : last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void) {
    Guard guard_;
    return sticky != cudaSuccess ? sticky : last_error;
}

const char* cudaGetErrorName(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "cudaSuccess";
        case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
        case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
        case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
        case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
        case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
        case cudaErrorNoDevice: return "cudaErrorNoDevice";
        case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
        case cudaErrorNotReady: return "cudaErrorNotReady";
        case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
        case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
        case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
        default: return "cudaErrorUnknown";
    }
}

const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorMemoryAllocation: return "out of memory";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
        case cudaErrorInvalidDevice: return "invalid device ordinal";
        case cudaErrorNoDevice: return "no CUDA-capable device is detected";
        case cudaErrorInvalidResourceHandle: return "invalid resource handle";
        case cudaErrorNotReady: return "device not ready";
        case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
        case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
        case cudaErrorLaunchFailure: return "unspecified launch failure";
        default: return "unknown error";
    }
}

// ---- memory -----------------------------------------------------------------------------------------------------

cudaError_t cudaMalloc(void** p, size_t size) {
    STICKY_CHECK();
    if (p == nullptr) {
        return fail(cudaErrorInvalidValue);
    }
    *p = nullptr;
    if (size > TOTAL_MEMORY - live_bytes) {
        return fail(cudaErrorMemoryAllocation);
    }
    const size_t body = round_pages(size == 0 ? 1 : size);
    const size_t mapped = body + 2 * page();
    void* m = mmap(nullptr, mapped, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        return fail(cudaErrorMemoryAllocation);
    }
    char* base = static_cast<char*>(m);
    // The end of the allocation touches the upper guard whenever size is a whole number of pages.
    char* user = base + page() + (body - round_pages(size == 0 ? 1 : size));
    mprotect(base + page(), body, PROT_READ | PROT_WRITE);
    memset(user, 0xFF, size);
    device_allocs[reinterpret_cast<uintptr_t>(user)] = Alloc{size, mapped, base, false};
    live_bytes += size;
    *p = user;
    return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
    STICKY_CHECK();
    if (p == nullptr) {
        return cudaSuccess;
    }
    run_all();  // cudaFree synchronizes the device
    auto it = device_allocs.find(reinterpret_cast<uintptr_t>(p));
    if (it == device_allocs.end() || it->second.freed) {
        fprintf(stderr, "dq4j emulated GPU: cudaFree(%p) of %s\n", p,
                it == device_allocs.end() ? "no allocation" : "freed memory");
        return fail(cudaErrorInvalidValue);
    }
    it->second.freed = true;
    live_bytes -= it->second.size;
    mprotect(it->second.base, it->second.mapped, PROT_NONE);
    quarantine.push_back(it->first);
    quarantined += it->second.mapped;
    reclaim();
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** p, size_t size, unsigned int /*flags*/) {
    STICKY_CHECK();
    if (p == nullptr) {
        return fail(cudaErrorInvalidValue);
    }
    *p = nullptr;
    void* m = size > (size_t(1) << 40) ? nullptr : aligned_alloc(4096, round_pages(size == 0 ? 1 : size));
    if (m == nullptr) {
        return fail(cudaErrorMemoryAllocation);
    }
    pinned[reinterpret_cast<uintptr_t>(m)] = size;
    *p = m;
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void** p, size_t size) { return cudaHostAlloc(p, size, 0); }

cudaError_t cudaFreeHost(void* p) {
    STICKY_CHECK();
    if (p == nullptr) {
        return cudaSuccess;
    }
    run_all();
    auto it = pinned.find(reinterpret_cast<uintptr_t>(p));
    if (it == pinned.end()) {
        fprintf(stderr, "dq4j emulated GPU: cudaFreeHost(%p) of no pinned buffer\n", p);
        return fail(cudaErrorInvalidValue);
    }
    pinned.erase(it);
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
    STICKY_CHECK();
    if (free_bytes == nullptr || total == nullptr) {
        return fail(cudaErrorInvalidValue);
    }
    *free_bytes = TOTAL_MEMORY - live_bytes;
    *total = TOTAL_MEMORY;
    return cudaSuccess;
}

static bool copy_ok(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
    const bool dd = device_range(dst, n);
    const bool sd = device_range(src, n);
    switch (kind) {
        case cudaMemcpyHostToDevice: return dd && !is_device(src);
        case cudaMemcpyDeviceToHost: return sd && !is_device(dst);
        case cudaMemcpyDeviceToDevice: return dd && sd;
        case cudaMemcpyHostToHost: return !is_device(dst) && !is_device(src);
        case cudaMemcpyDefault: return (dd || !is_device(dst)) && (sd || !is_device(src));
        default: return false;
    }
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t stream) {
    STICKY_CHECK();
    if (n == 0) {
        return cudaSuccess;
    }
    if (!valid_stream(stream)) {
        return fail(cudaErrorInvalidResourceHandle);
    }
    if (!copy_ok(dst, src, n, kind)) {
        fprintf(stderr, "dq4j emulated GPU: cudaMemcpyAsync(%p, %p, %zu, kind %d) outside the allocations\n", dst,
                src, n, (int)kind);
        return fail(cudaErrorInvalidValue);
    }
    Op op;
    op.run = [dst, src, n]() {
        // Checked again when it runs: the memory may have been freed since.
        if (!copy_ok(dst, src, n, cudaMemcpyDefault)) {
            make_sticky(cudaErrorIllegalAddress, "a copy ran on freed device memory");
            return;
        }
        memmove(dst, src, n);
    };
    enqueue(stream_of(stream), std::move(op));
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
    cudaError_t e = cudaMemcpyAsync(dst, src, n, kind, nullptr);
    if (e != cudaSuccess) {
        return e;
    }
    return cudaDeviceSynchronize();
}

cudaError_t cudaMemsetAsync(void* p, int value, size_t n, cudaStream_t stream) {
    STICKY_CHECK();
    if (n == 0) {
        return cudaSuccess;
    }
    if (!valid_stream(stream)) {
        return fail(cudaErrorInvalidResourceHandle);
    }
    if (!device_range(p, n)) {
        fprintf(stderr, "dq4j emulated GPU: cudaMemsetAsync(%p, %zu) outside the allocations\n", p, n);
        return fail(cudaErrorInvalidValue);
    }
    Op op;
    op.run = [p, value, n]() { memset(p, value, n); };
    enqueue(stream_of(stream), std::move(op));
    return cudaSuccess;
}

// ---- streams and events -----------------------------------------------------------------------------------------

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
    STICKY_CHECK();
    if (s == nullptr) {
        return fail(cudaErrorInvalidValue);
    }
    Stream* st = new Stream();
    st->blocking = (flags & cudaStreamNonBlocking) == 0;
    streams[st] = true;
    *s = reinterpret_cast<cudaStream_t>(st);
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }

cudaError_t cudaStreamDestroy(cudaStream_t s) {
    Guard guard_;
    Stream* st = stream_of(s);
    if (st == &legacy || streams.count(st) == 0) {
        return fail(cudaErrorInvalidResourceHandle);
    }
    run_until(st, st->enqueued);  // pending work still completes
    streams.erase(st);
    for (auto& e : events) {
        if (e.first->stream == st) {
            e.first->stream = nullptr;
        }
    }
    delete st;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    STICKY_CHECK();
    if (!valid_stream(s)) {
        return fail(cudaErrorInvalidResourceHandle);
    }
    Stream* st = stream_of(s);
    run_until(st, st->enqueued);
    return sticky == cudaSuccess ? cudaSuccess : fail(sticky);
}

cudaError_t cudaStreamQuery(cudaStream_t s) { return cudaStreamSynchronize(s); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int flags) {
    STICKY_CHECK();
    if (e == nullptr) {
        return fail(cudaErrorInvalidValue);
    }
    Event* ev = new Event();
    ev->timing = (flags & cudaEventDisableTiming) == 0;
    events[ev] = true;
    *e = reinterpret_cast<cudaEvent_t>(ev);
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }

cudaError_t cudaEventDestroy(cudaEvent_t e) {
    Guard guard_;
    if (events.erase(event_of(e)) == 0) {
        return fail(cudaErrorInvalidResourceHandle);
    }
    // A record still queued refers to the event: keep it alive (a few bytes) rather than track that.
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    STICKY_CHECK();
    Event* ev = event_of(e);
    if (events.count(ev) == 0 || !valid_stream(s)) {
        return fail(cudaErrorInvalidResourceHandle);
    }
    Stream* st = stream_of(s);
    Op op;
    op.run = [ev]() {
        ev->when = std::chrono::steady_clock::now();
        ev->happened = true;
    };
    ev->happened = false;
    enqueue(st, std::move(op));
    ev->stream = st;
    ev->pos = st->enqueued;
    return cudaSuccess;
}

cudaError_t cudaEventRecordWithFlags(cudaEvent_t e, cudaStream_t s, unsigned int /*flags*/) {
    return cudaEventRecord(e, s);
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int /*flags*/) {
    STICKY_CHECK();
    Event* ev = event_of(e);
    if (events.count(ev) == 0 || !valid_stream(s)) {
        return fail(cudaErrorInvalidResourceHandle);
    }
    Op op;
    op.wait_stream = ev->stream;  // null: never recorded, nothing to wait for
    op.wait_pos = ev->pos;
    enqueue(stream_of(s), std::move(op));
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    STICKY_CHECK();
    Event* ev = event_of(e);
    if (events.count(ev) == 0) {
        return fail(cudaErrorInvalidResourceHandle);
    }
    if (ev->stream != nullptr) {
        run_until(ev->stream, ev->pos);
    }
    return sticky == cudaSuccess ? cudaSuccess : fail(sticky);
}

cudaError_t cudaEventQuery(cudaEvent_t e) { return cudaEventSynchronize(e); }

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
    STICKY_CHECK();
    Event* a = event_of(start);
    Event* b = event_of(end);
    if (ms == nullptr || events.count(a) == 0 || events.count(b) == 0 || !a->timing || !b->timing) {
        return fail(cudaErrorInvalidResourceHandle);
    }
    if (!a->happened || !b->happened) {
        return fail(cudaErrorNotReady);
    }
    *ms = std::chrono::duration<float, std::milli>(b->when - a->when).count();
    return cudaSuccess;
}

// ---- kernels ----------------------------------------------------------------------------------------------------

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
    STICKY_CHECK();
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) {
        return fail(cudaErrorInvalidValue);
    }
    if (value < 0 || (size_t)value > OPTIN_SHARED) {
        return fail(cudaErrorInvalidValue);
    }
    max_dynamic_shared[func] = value;
    return cudaSuccess;
}

cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void* /*func*/, int threads,
                                                         size_t /*shared*/) {
    STICKY_CHECK();
    if (blocks == nullptr || threads <= 0 || threads > MAX_THREADS) {
        return fail(cudaErrorInvalidValue);
    }
    *blocks = 2048 / threads < 2 ? 1 : 2;
    return cudaSuccess;
}

}  // extern "C"
