// See tunnel.h.
#include "tunnel.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/if_tun.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/xfrm.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <atomic>
#include <chrono>
#include <initializer_list>
#include <mutex>
#include <thread>
#include <string>
#include <vector>
#include "fd.h"

namespace uvtep {

namespace {

// Linux 6.17's UAPI, newer than the build machine's headers may be.
constexpr unsigned kTunFUdpTunnelGso = 0x080;
constexpr int kVnetTunnelHdrLen = 24;  // struct virtio_net_hdr_v1_hash_tunnel
constexpr uint8_t kGsoUdpTunnelIpv4 = 0x20;
constexpr uint8_t kGsoUdpTunnelIpv6 = 0x40;
constexpr uint8_t kVnetUdpTunnelCsum = 0x08;  // the outer UDP checksum is to be finished (holds the pseudo-header sum)
constexpr uint32_t kTcxIngress = 46;  // BPF_TCX_INGRESS (Linux 6.6)
constexpr int32_t kFuncSkbLoadBytes = 26;
constexpr int32_t kFuncRedirectNeigh = 152;
constexpr int32_t kTcActShot = 2;
// Where the program finds the underlay's ifindex: bytes 8-11 of the Ethernet source address
// (native order), which bpf_redirect_neigh replaces with the device's own.
constexpr int kIfindexAt = 8;
// The new mount API (Linux 5.2), which the build machine's libc may not wrap.
constexpr long kSysFsopen = 430;
constexpr long kSysFsconfig = 431;
constexpr long kSysFsmount = 432;
constexpr unsigned kFsopenCloexec = 1;
constexpr unsigned kFsconfigCmdCreate = 6;
constexpr unsigned kFsmountCloexec = 1;

long Bpf(int cmd, union bpf_attr* a) { return syscall(__NR_bpf, cmd, a, sizeof *a); }

struct Insn {
  uint8_t code;
  uint8_t regs;  // dst in the low nibble, src in the high one
  int16_t off;
  int32_t imm;
};

constexpr Insn I(uint8_t code, int dst, int src, int16_t off, int32_t imm) { return {code, static_cast<uint8_t>(dst | (src << 4)), off, imm}; }

// ifindex = load 4 bytes at kIfindexAt; return bpf_redirect_neigh(ifindex, NULL, 0, 0); a packet
// too short to hold them is dropped.
const Insn kProgram[] = {
    I(0xb7, 2, 0, 0, kIfindexAt),          // r2 = offset (r1 is the skb)
    I(0xbf, 3, 10, 0, 0),                  // r3 = r10
    I(0x07, 3, 0, 0, -8),                  // r3 += -8
    I(0xb7, 4, 0, 0, 4),                   // r4 = 4
    I(0x85, 0, 0, 0, kFuncSkbLoadBytes),   // r0 = bpf_skb_load_bytes(skb, off, r10 - 8, 4)
    I(0x55, 0, 0, 6, 0),                   // if r0 != 0 goto drop
    I(0x61, 1, 10, -8, 0),                 // r1 = *(u32 *)(r10 - 8)
    I(0xb7, 2, 0, 0, 0),                   // r2 = NULL
    I(0xb7, 3, 0, 0, 0),                   // r3 = 0
    I(0xb7, 4, 0, 0, 0),                   // r4 = 0
    I(0x85, 0, 0, 0, kFuncRedirectNeigh),  // r0 = bpf_redirect_neigh(r1, NULL, 0, 0)
    I(0x95, 0, 0, 0, 0),                   // return r0
    I(0xb7, 0, 0, 0, kTcActShot),          // drop: r0 = TC_ACT_SHOT
    I(0x95, 0, 0, 0, 0),
};

void PutLe16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}

// Appends attribute `type` to the netlink message at msg (a buffer of 160 bytes).
void AddAttr(uint8_t* msg, uint16_t type, const void* data, size_t len) {
  auto* n = reinterpret_cast<struct nlmsghdr*>(msg);
  const size_t at = NLMSG_ALIGN(n->nlmsg_len);
  const struct rtattr a = {static_cast<unsigned short>(RTA_LENGTH(len)), type};
  memcpy(msg + at, &a, sizeof a);
  memcpy(msg + at + RTA_LENGTH(0), data, len);
  n->nlmsg_len = static_cast<uint32_t>(at + RTA_ALIGN(RTA_LENGTH(len)));
}


// Sends dump request req on a new netlink socket of protocol proto and hands each answer to
// each until NLMSG_DONE: 0, or -errno (the socket, the request, or the kernel's answer).
template <typename F>
int NlDump(int proto, struct nlmsghdr* req, F each) {
  Fd s(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, proto));
  if (s.get() < 0) return -errno;
  const struct timeval wait = {0, 200 * 1000};
  setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
  req->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req->nlmsg_seq = 1;
  if (Retry([&] { return send(s.get(), req, req->nlmsg_len, 0); }) < 0) return -errno;
  std::vector<uint8_t> buf(65536);  // more than a dump fills at once
  for (;;) {
    const ssize_t n = Retry([&] { return recv(s.get(), buf.data(), buf.size(), 0); });
    if (n < 0) return -errno;
    if (n == 0) return -EIO;
    int left = static_cast<int>(n);
    for (auto* h = reinterpret_cast<struct nlmsghdr*>(buf.data()); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_type == NLMSG_DONE) return 0;
      if (h->nlmsg_type == NLMSG_ERROR) {
        const auto* e = static_cast<const struct nlmsgerr*>(NLMSG_DATA(h));
        return e->error != 0 ? e->error : -EIO;
      }
      each(h);
    }
  }
}

// Calls each(type, data, len) for the netlink attributes in p[0, len) (nested ones unopened).
template <typename F>
void NlAttrs(const uint8_t* p, int len, F each) {
  while (len >= NLA_HDRLEN) {
    struct nlattr a;
    memcpy(&a, p, sizeof a);
    if (a.nla_len < NLA_HDRLEN || a.nla_len > len) return;
    each(a.nla_type & NLA_TYPE_MASK, p + NLA_HDRLEN, static_cast<int>(a.nla_len - NLA_HDRLEN));
    const int step = NLA_ALIGN(a.nla_len);
    p += step;
    len -= step;
  }
}

// Whether an nftables base chain of the family's (ip or ip6, or inet) hooks OUTPUT or
// POSTROUTING (iptables-nft makes its chains there too), or an iptables-legacy table exists:
// kHoldNetfilter, kHoldUnknown when the ruleset could not be read, or 0.
int NetfilterHolds(bool v6) {
  if (int f = ::open(v6 ? "/proc/net/ip6_tables_names" : "/proc/net/ip_tables_names", O_RDONLY | O_CLOEXEC); f >= 0) {
    char c;
    const ssize_t n = Retry([&] { return read(f, &c, 1); });
    close(f);
    if (n > 0) return kHoldNetfilter;  // a table (filter, nat, mangle, raw, security) hooks OUTPUT
  }
  struct {
    struct nlmsghdr h;
    struct nfgenmsg g;
  } req = {};
  req.h.nlmsg_len = NLMSG_LENGTH(sizeof req.g);
  req.h.nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETCHAIN;
  req.g.nfgen_family = NFPROTO_UNSPEC;
  req.g.version = NFNETLINK_V0;
  const int family = v6 ? NFPROTO_IPV6 : NFPROTO_IPV4;
  bool hook = false;
  const int rc = NlDump(NETLINK_NETFILTER, &req.h, [&](const struct nlmsghdr* h) {
    if (h->nlmsg_type != ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWCHAIN) || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nfgenmsg))) return;
    const auto* g = static_cast<const struct nfgenmsg*>(NLMSG_DATA(h));
    if (g->nfgen_family != NFPROTO_INET && g->nfgen_family != family) return;
    const auto* p = static_cast<const uint8_t*>(NLMSG_DATA(h)) + NLMSG_ALIGN(sizeof(struct nfgenmsg));
    NlAttrs(p, static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(NLMSG_ALIGN(sizeof(struct nfgenmsg)))), [&](int type, const uint8_t* d, int len) {
      if (type != NFTA_CHAIN_HOOK) return;
      NlAttrs(d, len, [&](int t, const uint8_t* v, int vlen) {
        uint32_t num;
        if (t != NFTA_HOOK_HOOKNUM || vlen < 4) return;
        memcpy(&num, v, 4);
        num = ntohl(num);
        hook = hook || num == NF_INET_LOCAL_OUT || num == NF_INET_POST_ROUTING;
      });
    });
  });
  if (rc == -EPROTONOSUPPORT || rc == -EOPNOTSUPP) return 0;  // no netfilter, or no nftables
  return rc < 0 ? kHoldUnknown : hook ? kHoldNetfilter : 0;
}

// Whether an outbound IPsec policy exists for the family: kHoldXfrm, kHoldUnknown, or 0.
int XfrmHolds(bool v6) {
  struct {
    struct nlmsghdr h;
    struct xfrm_userpolicy_id id;
  } req = {};
  req.h.nlmsg_len = NLMSG_LENGTH(sizeof req.id);
  req.h.nlmsg_type = XFRM_MSG_GETPOLICY;
  bool out = false;
  const int rc = NlDump(NETLINK_XFRM, &req.h, [&](const struct nlmsghdr* h) {
    if (h->nlmsg_type != XFRM_MSG_NEWPOLICY || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct xfrm_userpolicy_info))) return;
    struct xfrm_userpolicy_info p;
    memcpy(&p, NLMSG_DATA(h), sizeof p);
    out = out || (p.dir == XFRM_POLICY_OUT && (p.sel.family == AF_UNSPEC || p.sel.family == (v6 ? AF_INET6 : AF_INET)));
  });
  if (rc == -EPROTONOSUPPORT) return 0;  // no IPsec
  return rc < 0 ? kHoldUnknown : out ? kHoldXfrm : 0;
}

// The cgroup v2 hierarchy, as a mount of its own that is attached nowhere (fsopen and fsmount,
// Linux 5.2): it does not depend on where (or whether) this mount namespace shows cgroup2
// (ip netns exec remounts /sys without it). A mount where it shows it, without CAP_SYS_ADMIN.
// -1 when neither is there.
int CgroupRoot() {
  static int root = -2;
  if (root != -2) return root;
  root = -1;
  Fd fs(static_cast<int>(syscall(kSysFsopen, "cgroup2", kFsopenCloexec)));
  if (fs.get() >= 0 && syscall(kSysFsconfig, fs.get(), kFsconfigCmdCreate, nullptr, nullptr, 0) == 0) {
    const int m = static_cast<int>(syscall(kSysFsmount, fs.get(), kFsmountCloexec, 0));
    if (m >= 0) return root = m;
  }
  if (FILE* f = fopen("/proc/self/mountinfo", "re")) {
    char line[1024];
    while (root < 0 && fgets(line, sizeof line, f) != nullptr) {
      // "id parent major:minor root mountpoint options ... - fstype source superoptions"
      char at[256], point[512];
      if (strstr(line, " - cgroup2 ") != nullptr && sscanf(line, "%*s %*s %*s %255s %511s", at, point) == 2 && strcmp(at, "/") == 0) {
        root = ::open(point, O_PATH | O_DIRECTORY | O_CLOEXEC);
      }
    }
    fclose(f);
  }
  return root;
}

// The process's cgroup v2 directory, opened; -1 when it cannot be.
int OpenCgroup() {
  const int root = CgroupRoot();
  if (root < 0) return -1;
  std::string path;
  if (FILE* f = fopen("/proc/self/cgroup", "re")) {
    char line[1024];
    while (fgets(line, sizeof line, f) != nullptr) {
      if (strncmp(line, "0::/", 4) != 0) continue;
      path = line + 4;
      while (!path.empty() && path.back() == '\n') path.pop_back();
    }
    fclose(f);
  }
  return ::openat(root, path.empty() ? "." : path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

// Whether a cgroup BPF program sees the socket's datagrams and not the injector's: on inet
// egress (the injector's packets have no socket), on UDP sendmsg (which may rewrite the
// destination) or on socket creation (which may mark the socket, for routing and tc):
// kHoldCgroupBpf, kHoldUnknown (no cgroup v2 to look at), or 0.
int CgroupHolds(bool v6) {
  Fd d(OpenCgroup());
  if (d.get() < 0) return kHoldUnknown;
  for (const int type : {BPF_CGROUP_INET_EGRESS, BPF_CGROUP_INET_SOCK_CREATE, v6 ? BPF_CGROUP_UDP6_SENDMSG : BPF_CGROUP_UDP4_SENDMSG}) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.query.target_fd = static_cast<uint32_t>(d.get());
    a.query.attach_type = static_cast<uint32_t>(type);
    a.query.query_flags = BPF_F_QUERY_EFFECTIVE;
    if (Bpf(BPF_PROG_QUERY, &a) < 0) return kHoldUnknown;
    if (a.query.prog_cnt > 0) return kHoldCgroupBpf;
  }
  return 0;
}

}  // namespace

TunnelInjector::~TunnelInjector() {
  for (int fd : {link_, prog_, tap_, nl_}) {
    if (fd >= 0) close(fd);
  }
}

int TunnelInjector::Open(const char* name, const char** what) {
  Fd tap(::open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK));
  *what = "opening /dev/net/tun";
  if (tap.get() < 0) return -errno;
  struct ifreq ifr = {};
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  *what = "creating its TAP";
  if (ioctl(tap.get(), TUNSETIFF, &ifr) < 0) return -errno;
  int hdr = kVnetTunnelHdrLen;
  *what = "setting its virtio_net_hdr size";
  if (ioctl(tap.get(), TUNSETVNETHDRSZ, &hdr) < 0) return -errno;
  // the kernels that take tunnel-GSO writes are the ones that know this flag
  *what = "enabling UDP tunnel GSO on its TAP (Linux 6.17 or later)";
  if (ioctl(tap.get(), TUNSETOFFLOAD, static_cast<unsigned long>(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | kTunFUdpTunnelGso)) < 0) return -errno;
  char path[96];
  snprintf(path, sizeof path, "/proc/sys/net/ipv6/conf/%s/disable_ipv6", ifr.ifr_name);
  if (int f = ::open(path, O_WRONLY | O_CLOEXEC); f >= 0) {  // no link-local address, no router solicitations
    (void)!write(f, "1", 1);
    close(f);
  }
  Fd ctl(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  *what = "bringing its TAP up";
  if (ctl.get() < 0 || ioctl(ctl.get(), SIOCGIFFLAGS, &ifr) < 0) return -errno;
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (ioctl(ctl.get(), SIOCSIFFLAGS, &ifr) < 0) return -errno;
  const int ifindex = static_cast<int>(if_nametoindex(ifr.ifr_name));

  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.prog_type = BPF_PROG_TYPE_SCHED_CLS;
  a.insns = reinterpret_cast<uint64_t>(kProgram);
  a.insn_cnt = sizeof kProgram / sizeof kProgram[0];
  a.license = reinterpret_cast<uint64_t>("GPL");
  snprintf(a.prog_name, sizeof a.prog_name, "uvtep_tunnel");
  *what = "loading its BPF program";
  Fd prog(static_cast<int>(Bpf(BPF_PROG_LOAD, &a)));
  if (prog.get() < 0) return -errno;
  memset(&a, 0, sizeof a);
  a.link_create.prog_fd = static_cast<uint32_t>(prog.get());
  a.link_create.target_ifindex = static_cast<uint32_t>(ifindex);
  a.link_create.attach_type = kTcxIngress;
  *what = "attaching its BPF program to tcx ingress (Linux 6.6 or later)";
  Fd link(static_cast<int>(Bpf(BPF_LINK_CREATE, &a)));
  if (link.get() < 0) return -errno;
  *what = "opening a netlink socket";
  Fd nl(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (nl.get() < 0) return -errno;
  const struct timeval wait = {0, 200 * 1000};  // a lookup never blocks the data path for long
  setsockopt(nl.get(), SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
  tap_ = tap.Release();
  prog_ = prog.Release();
  link_ = link.Release();
  nl_ = nl.Release();
  *what = "";
  return 0;
}

bool TunnelInjector::Lookup(bool v6, const uint8_t* dst, int oif, const uint8_t* src, uint16_t sport, uint16_t dport, TunnelRoute* r) {
  const size_t alen = v6 ? 16 : 4;
  if (nl_ < 0) return false;
  alignas(struct nlmsghdr) uint8_t req[160] = {};
  auto* rq = reinterpret_cast<struct nlmsghdr*>(req);
  auto* rm = reinterpret_cast<struct rtmsg*>(req + NLMSG_HDRLEN);
  rq->nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
  rq->nlmsg_type = RTM_GETROUTE;
  rq->nlmsg_flags = NLM_F_REQUEST;
  rq->nlmsg_seq = ++seq_;
  rm->rtm_family = v6 ? AF_INET6 : AF_INET;
  rm->rtm_dst_len = static_cast<unsigned char>(alen * 8);
  AddAttr(req, RTA_DST, dst, alen);
  bool bound = false;
  for (size_t i = 0; i < alen; i++) bound = bound || src[i] != 0;
  if (bound) {
    rm->rtm_src_len = static_cast<unsigned char>(alen * 8);
    AddAttr(req, RTA_SRC, src, alen);
  }
  if (oif > 0) AddAttr(req, RTA_OIF, &oif, sizeof oif);
  // what policy routing (ip rule) may select on, as for the socket's datagrams: its owner, UDP, ports
  const uint32_t uid = geteuid();
  const uint8_t proto = IPPROTO_UDP;
  AddAttr(req, RTA_UID, &uid, sizeof uid);
  AddAttr(req, RTA_IP_PROTO, &proto, 1);
  AddAttr(req, RTA_SPORT, &sport, 2);
  AddAttr(req, RTA_DPORT, &dport, 2);
  if (Retry([&] { return send(nl_, req, rq->nlmsg_len, 0); }) < 0) return false;
  alignas(struct nlmsghdr) uint8_t buf[4096];
  for (;;) {
    const ssize_t n = Retry([&] { return recv(nl_, buf, sizeof buf, 0); });
    if (n <= 0) return false;
    int left = static_cast<int>(n);
    for (auto* h = reinterpret_cast<struct nlmsghdr*>(buf); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_seq != seq_) continue;
      if (h->nlmsg_type != RTM_NEWROUTE) return false;  // NLMSG_ERROR: no route
      auto* m = static_cast<struct rtmsg*>(NLMSG_DATA(h));
      if (m->rtm_type != RTN_UNICAST) return false;  // local, broadcast, multicast, unreachable
      int len = static_cast<int>(RTM_PAYLOAD(h));
      int out = 0;
      uint8_t pref[16] = {};
      bool hasPref = false;
      for (auto* a = RTM_RTA(m); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
        if (a->rta_type == RTA_OIF && RTA_PAYLOAD(a) >= 4) memcpy(&out, RTA_DATA(a), 4);
        if (a->rta_type == RTA_PREFSRC && RTA_PAYLOAD(a) >= alen) {
          memcpy(pref, RTA_DATA(a), alen);
          hasPref = true;
        }
      }
      if (out <= 0 || (!bound && !hasPref)) return false;
      r->oif = out;
      r->v6 = v6;
      memcpy(r->src, bound ? src : pref, alen);
      memcpy(r->dst, dst, alen);
      return true;
    }
  }
}

namespace {

int HoldsNow(bool v6) { return NetfilterHolds(v6) | XfrmHolds(v6) | CgroupHolds(v6); }

// What the looking thread last found per family (-1: not yet asked for). Plain atomics of static
// storage: the thread may still run while the process exits.
std::atomic<int> g_holds[2] = {{-1}, {-1}};

// Looks again every second for the families asked for, off the forwarding thread: the dumps
// and queries take a millisecond or more, which no packet should wait for.
void LookAgain() {
  for (;;) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    for (int i = 0; i < 2; i++) {
      if (g_holds[i].load(std::memory_order_relaxed) >= 0) g_holds[i].store(HoldsNow(i == 1), std::memory_order_relaxed);
    }
  }
}

}  // namespace

int TunnelInjector::Holds(bool v6) {
  const int i = v6 ? 1 : 0;
  const int held = g_holds[i].load(std::memory_order_relaxed);
  if (held >= 0) return held;
  // the first time for this family: looked at before anything is sent, then by the thread
  const int now = HoldsNow(v6);
  g_holds[i].store(now, std::memory_order_relaxed);
  static std::once_flag started;
  std::call_once(started, [] { std::thread(LookAgain).detach(); });
  return now;
}

void TunnelInjector::AtLeast(int bytes) {
  if (tap_ < 0 || bytes <= sndbuf_) return;
  if (ioctl(tap_, TUNSETSNDBUF, &bytes) == 0) sndbuf_ = bytes;
}

InjectorSink::InjectorSink(TunnelInjector* inj, int sock) : inj_(inj), sock_(sock) {
  int bytes = 0;
  socklen_t len = sizeof bytes;
  if (getsockopt(sock, SOL_SOCKET, SO_SNDBUF, &bytes, &len) == 0) inj_->AtLeast(bytes);
}

int InjectorSink::Holds(int family) { return inj_->Holds(family == AF_INET6); }

bool InjectorSink::Route(const sockaddr_storage& to, TunnelRoute* r) {
  if ((to.ss_family != AF_INET && to.ss_family != AF_INET6) || !inj_->ready()) return false;
  const bool v6 = to.ss_family == AF_INET6;
  sockaddr_storage self = {};
  socklen_t slen = sizeof self;
  if (getsockname(sock_, reinterpret_cast<struct sockaddr*>(&self), &slen) < 0 || self.ss_family != to.ss_family) return false;
  int oif = 0;
  socklen_t olen = sizeof oif;
  if (getsockopt(sock_, SOL_SOCKET, SO_BINDTOIFINDEX, &oif, &olen) < 0) oif = 0;
  int ttl = -1, tos = 0, pmtu = IP_PMTUDISC_WANT;
  socklen_t ilen = sizeof ttl;
  TunnelRoute n;
  if (v6) {
    const auto* d = reinterpret_cast<const struct sockaddr_in6*>(&to);
    const auto* s = reinterpret_cast<const struct sockaddr_in6*>(&self);
    getsockopt(sock_, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &ttl, &ilen);
    ilen = sizeof tos;
    getsockopt(sock_, IPPROTO_IPV6, IPV6_TCLASS, &tos, &ilen);
    if (IN6_IS_ADDR_LINKLOCAL(&d->sin6_addr) || IN6_IS_ADDR_MULTICAST(&d->sin6_addr) || IN6_IS_ADDR_V4MAPPED(&d->sin6_addr)) return false;
    if (!inj_->Lookup(true, reinterpret_cast<const uint8_t*>(&d->sin6_addr), oif, reinterpret_cast<const uint8_t*>(&s->sin6_addr), s->sin6_port, d->sin6_port, &n)) return false;
    n.sport = s->sin6_port;
    n.dport = d->sin6_port;
  } else {
    const auto* d = reinterpret_cast<const struct sockaddr_in*>(&to);
    const auto* s = reinterpret_cast<const struct sockaddr_in*>(&self);
    getsockopt(sock_, IPPROTO_IP, IP_TTL, &ttl, &ilen);
    ilen = sizeof tos;
    getsockopt(sock_, IPPROTO_IP, IP_TOS, &tos, &ilen);
    ilen = sizeof pmtu;
    getsockopt(sock_, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, &ilen);
    if (!inj_->Lookup(false, reinterpret_cast<const uint8_t*>(&d->sin_addr), oif, reinterpret_cast<const uint8_t*>(&s->sin_addr), s->sin_port, d->sin_port, &n)) return false;
    n.sport = s->sin_port;
    n.dport = d->sin_port;
  }
  n.ttl = static_cast<uint8_t>(ttl > 0 && ttl < 256 ? ttl : 64);
  n.tos = static_cast<uint8_t>(tos & ~3);
  n.df = pmtu != IP_PMTUDISC_DONT;
  *r = n;
  return true;
}

int InjectorSink::Send(const TunnelRoute& r, uint32_t vni, const VnetHdr& h, const GsoShape& g, const uint8_t* f, size_t len) {
  const int outer = r.v6 ? kTunnelOuter6 : kTunnelOuter;
  const int l3len = r.v6 ? 40 : 20;
  const size_t udpLen = len + 16;
  if (udpLen + (r.v6 ? 0 : 20) > 65535) return -EMSGSIZE;
  uint8_t b[kVnetTunnelHdrLen + kTunnelOuter6] = {};
  // virtio_net_hdr_v1_hash_tunnel, little endian: the inner TCP as the TAP gave it, the outer
  // UDP header and inner IP header by offset
  const VnetHdr vh{static_cast<uint8_t>(kVnetNeedsCsum | (r.v6 ? kVnetUdpTunnelCsum : 0)),
                   static_cast<uint8_t>((g.v6 ? kGsoTcpV6 : kGsoTcpV4) | (h.gsoType & kGsoEcn) | (r.v6 ? kGsoUdpTunnelIpv6 : kGsoUdpTunnelIpv4)),
                   static_cast<uint16_t>(outer + g.hdrLen), static_cast<uint16_t>(g.mss), static_cast<uint16_t>(outer + g.l4), h.csumOffset};
  WriteVnet(b, vh);
  PutLe16(b + 20, static_cast<uint16_t>(14 + l3len));  // outer_th_offset
  PutLe16(b + 22, static_cast<uint16_t>(outer + g.l3));  // inner_nh_offset
  uint8_t* e = b + kVnetTunnelHdrLen;
  e[0] = 0x02;  // a unicast address: the program replaces both
  e[5] = 0x01;
  e[6] = 0x02;
  memcpy(e + kIfindexAt, &r.oif, 4);
  uint8_t* ip = e + 14;
  uint8_t* udp = ip + l3len;
  if (r.v6) {
    e[12] = 0x86;
    e[13] = 0xdd;
    ip[0] = static_cast<uint8_t>(0x60 | (r.tos >> 4));
    ip[1] = static_cast<uint8_t>(r.tos << 4);
    PutBe16(ip + 4, static_cast<uint16_t>(udpLen));
    ip[6] = IPPROTO_UDP;
    ip[7] = r.ttl;
    memcpy(ip + 8, r.src, 16);
    memcpy(ip + 24, r.dst, 16);
    // UDP over IPv6 needs its checksum (RFC 8200): the field holds the pseudo-header sum, and
    // the kernel (or the NIC) finishes it per segment (VIRTIO_NET_HDR_F_UDP_TUNNEL_CSUM)
    PutCsum(udp + 6, CsumFold(Pseudo(ip, true, IPPROTO_UDP, static_cast<uint32_t>(udpLen))));
  } else {
    e[12] = 0x08;
    e[13] = 0x00;
    ip[0] = 0x45;
    ip[1] = r.tos;
    PutBe16(ip + 2, static_cast<uint16_t>(udpLen + 20));
    PutBe16(ip + 4, id_);
    id_ = static_cast<uint16_t>(id_ + (len - g.hdrLen + g.mss - 1) / g.mss);  // one per segment, as the kernel's GSO numbers them
    ip[6] = r.df ? 0x40 : 0;
    ip[8] = r.ttl;
    ip[9] = IPPROTO_UDP;
    memcpy(ip + 12, r.src, 4);
    memcpy(ip + 16, r.dst, 4);
    Ipv4Csum(ip, 20);
    // UDP checksum 0: RFC 7348, as the kernel's VTEP over IPv4
  }
  memcpy(udp, &r.sport, 2);
  memcpy(udp + 2, &r.dport, 2);
  PutBe16(udp + 4, static_cast<uint16_t>(udpLen));
  uint8_t* vx = udp + 8;
  vx[0] = 0x08;
  vx[4] = static_cast<uint8_t>(vni >> 16);
  vx[5] = static_cast<uint8_t>(vni >> 8);
  vx[6] = static_cast<uint8_t>(vni);
  struct iovec iov[2] = {{b, static_cast<size_t>(kVnetTunnelHdrLen + outer)}, {const_cast<uint8_t*>(f), len}};
  return Retry([&] { return writev(inj_->fd(), iov, 2); }) < 0 ? -errno : 0;
}

}  // namespace uvtep
