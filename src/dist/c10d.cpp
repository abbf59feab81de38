// The few c10d calls gptlab's data parallelism needs, behind a C interface: a TCPStore
// rendezvous, a process group (Gloo between CPUs; NCCL between GPUs where this file is built
// with USE_C10D_NCCL), and all-reduce and broadcast of tensors. tch does not bind c10d; the
// libtorch it links exports these symbols (libtorch_cpu.so for the store and Gloo,
// libtorch_cuda.so for NCCL), so this file only needs their headers. Every call catches C++
// exceptions and returns the message in `err` (freed with gl_free_error), so no exception
// crosses into Rust.

#include <cstdlib>
#include <cstring>
#include <string>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

struct GlGroup {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> pg;
};

static int fail(char** err, const char* what) {
  *err = strdup(what);
  return -1;
}

template <typename F>
static int guarded(char** err, F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    return fail(err, e.what());
  } catch (...) {
    return fail(err, "unknown C++ exception");
  }
}

extern "C" {

// The rendezvous of `world` processes at the store rank 0 serves at host:port.
static c10::intrusive_ptr<c10d::Store> rendezvous(const char* host, int port, int rank, int world,
                                                  std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<std::uint16_t>(port);
  // Under torchrun the agent already serves the store at MASTER_PORT; rank 0 joins it.
  const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  o.isServer = rank == 0 && !(agent && std::string(agent) == "True");
  o.numWorkers = world;
  o.timeout = timeout;
  return c10::make_intrusive<c10d::TCPStore>(std::string(host), o);
}

// Joins the Gloo group of `world` processes whose rank 0 serves the store at host:port. Gloo
// binds the interface GLOO_SOCKET_IFNAME names when set (as torch.distributed does), else the
// address this machine's hostname resolves to (loopback where it resolves to none).
GlGroup* gl_group_new(const char* host, int port, int rank, int world, long long timeout_ms, char** err) {
  GlGroup* group = nullptr;
  guarded(err, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto store = rendezvous(host, port, rank, world, timeout);
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    opts->devices.push_back(ifname && *ifname ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                                              : c10d::ProcessGroupGloo::createDefaultDevice());
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, opts);
    group = new GlGroup{store, pg};
  });
  return group;
}

#ifdef USE_C10D_NCCL
// Joins the NCCL group of `world` processes (rendezvous as gl_group_new), this one on GPU
// `device`, which becomes the current one.
GlGroup* nc_group_new(const char* host, int port, int rank, int world, int device, long long timeout_ms,
                      char** err) {
  GlGroup* group = nullptr;
  guarded(err, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
    auto store = rendezvous(host, port, rank, world, timeout);
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout;
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, opts);
    group = new GlGroup{store, pg};
  });
  return group;
}
#endif

// Sums `tensor` (an at::Tensor*, tch's handle) over the group, in place.
int gl_all_reduce_sum(GlGroup* g, void* tensor, char** err) {
  return guarded(err, [&] {
    std::vector<at::Tensor> ts{*static_cast<at::Tensor*>(tensor)};
    g->pg->allreduce(ts)->wait();
  });
}

// Copies rank `root`'s `tensor` into every rank's, in place.
int gl_broadcast(GlGroup* g, void* tensor, int root, char** err) {
  return guarded(err, [&] {
    std::vector<at::Tensor> ts{*static_cast<at::Tensor*>(tensor)};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    g->pg->broadcast(ts, o)->wait();
  });
}

// Shuts the group down (NCCL tears down its communicators and watchdog; Gloo has nothing to do)
// and frees it.
void gl_group_free(GlGroup* g) {
  try {
    g->pg->shutdown();
  } catch (...) {
  }
  delete g;
}

void gl_free_error(char* err) {
  std::free(err);
}
}
