// Link settings by ioctl (MTU, MAC, flags, bridge ports) and rtnetlink (addresses).
// Native checks argument types only; names, ranges and address parsing live in TypeScript.
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include "errors.h"
#include "fd.h"
#include "uvtep.h"

#ifndef SIOCBRADDIF
#define SIOCBRADDIF 0x89a2
#define SIOCBRDELIF 0x89a3
#endif

namespace uvtep {

namespace {

std::string NameArg(const Napi::CallbackInfo& info, size_t i) {
  std::string name = info[i].As<Napi::String>().Utf8Value();
  if (name.empty() || name.size() >= IFNAMSIZ) throw Napi::RangeError::New(info.Env(), "interface name must have 1 to 15 characters");
  return name;
}

std::string NoDeviceHint(int err, const std::string& name) {
  if (err == ENODEV) return "no interface named " + name;
  if (err == EPERM) return "changing links needs root or CAP_NET_ADMIN";
  return "";
}

// The interface named by argument i, with an ifreq for its SIOC* link ioctls.
struct Link {
  std::string name;
  struct ifreq ifr;

  Link(const Napi::CallbackInfo& info, size_t i) : name(NameArg(info, i)) {
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  }
  // One ioctl on a throwaway AF_INET datagram socket (the usual way to reach them): 0 or errno.
  int Try(Napi::Env env, unsigned long req) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) throw SystemError(env, errno, "socket(AF_INET)");
    Fd guard(s);
    return ioctl(s, req, &ifr) < 0 ? errno : 0;
  }
  void Ioctl(Napi::Env env, unsigned long req, const char* syscall) {
    if (int err = Try(env, req)) throw SystemError(env, err, syscall, NoDeviceHint(err, name));
  }
};

// Appends one attribute to a request of `cap` bytes (a fixed struct the caller sized for its
// attributes; one that does not fit is a programming error, caught here rather than overrun).
void AddAttr(struct nlmsghdr* nh, size_t cap, unsigned short type, const void* data, size_t len) {
  if (NLMSG_ALIGN(nh->nlmsg_len) + RTA_SPACE(len) > cap) abort();
  char* base = reinterpret_cast<char*>(nh);
  struct rtattr* rta = reinterpret_cast<struct rtattr*>(base + NLMSG_ALIGN(nh->nlmsg_len));
  rta->rta_type = type;
  rta->rta_len = static_cast<unsigned short>(RTA_LENGTH(len));
  memcpy(RTA_DATA(rta), data, len);
  nh->nlmsg_len = NLMSG_ALIGN(nh->nlmsg_len) + RTA_ALIGN(rta->rta_len);
}

// Sends one rtnetlink request and waits for its ACK; throws the kernel's error (with `missingOk`,
// a delete of something already gone is no error).
void NetlinkTalk(Napi::Env env, struct nlmsghdr* req, const char* what, const std::string& name, bool missingOk = false) {
  int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (s < 0) throw SystemError(env, errno, "socket(AF_NETLINK)");
  Fd guard(s);
  struct sockaddr_nl sa;
  memset(&sa, 0, sizeof sa);
  sa.nl_family = AF_NETLINK;
  std::string sys = std::string("sendto(") + what + ")";
  if (sendto(s, req, req->nlmsg_len, 0, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) < 0) throw SystemError(env, errno, sys.c_str());
  char buf[4096];
  std::string nl = std::string("netlink(") + what + ")";
  for (;;) {
    ssize_t n = Retry([&] { return recv(s, buf, sizeof buf, 0); });
    if (n < 0) throw SystemError(env, errno, nl.c_str());
    for (struct nlmsghdr* h = reinterpret_cast<struct nlmsghdr*>(buf); NLMSG_OK(h, static_cast<unsigned>(n)); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type == NLMSG_ERROR) {
        struct nlmsgerr* e = static_cast<struct nlmsgerr*>(NLMSG_DATA(h));
        if (e->error == 0) return;
        int err = -e->error;
        if (missingOk && (err == ENOENT || err == ESRCH)) return;
        throw SystemError(env, err, nl.c_str(), err == EEXIST ? "the address is already assigned" : NoDeviceHint(err, name));
      }
    }
  }
}

// The interface index of `name`, or a SystemError naming it.
unsigned IndexOf(Napi::Env env, const std::string& name) {
  unsigned idx = if_nametoindex(name.c_str());
  if (idx == 0) throw SystemError(env, errno, "if_nametoindex", NoDeviceHint(errno, name));
  return idx;
}

// One rtnetlink request: the header, the message (`msg`), room for attributes; zeroed, asking
// for an ACK. `Add` appends an attribute (bounds-checked), `Talk` sends it and waits.
template <typename Msg, size_t Room>
struct NlRequest {
  struct nlmsghdr nh;
  Msg msg;
  char attrs[Room];

  NlRequest(unsigned short type, unsigned short flags) {
    memset(this, 0, sizeof *this);
    nh.nlmsg_len = NLMSG_LENGTH(sizeof(Msg));
    nh.nlmsg_type = type;
    nh.nlmsg_flags = static_cast<unsigned short>(NLM_F_REQUEST | NLM_F_ACK | flags);
    nh.nlmsg_seq = 1;
  }
  void Add(unsigned short type, const void* data, size_t len) { AddAttr(&nh, sizeof *this, type, data, len); }
  void Talk(Napi::Env env, const char* what, const std::string& name, bool missingOk = false) { NetlinkTalk(env, &nh, what, name, missingOk); }
};

}  // namespace

static Napi::Value IfIndex(const Napi::CallbackInfo& info) {
  ExpectArgs(info, "ifindex", "s");
  return Napi::Number::New(info.Env(), IndexOf(info.Env(), NameArg(info, 0)));
}

static Napi::Value GetMtu(const Napi::CallbackInfo& info) {
  ExpectArgs(info, "getMtu", "s");
  Link l(info, 0);
  l.Ioctl(info.Env(), SIOCGIFMTU, "ioctl(SIOCGIFMTU)");
  return Napi::Number::New(info.Env(), l.ifr.ifr_mtu);
}

static Napi::Value SetMtu(const Napi::CallbackInfo& info) {
  ExpectArgs(info, "setMtu", "sn");
  Link l(info, 0);
  l.ifr.ifr_mtu = info[1].As<Napi::Number>().Int32Value();
  l.Ioctl(info.Env(), SIOCSIFMTU, "ioctl(SIOCSIFMTU)");
  return info.Env().Undefined();
}

static Napi::Value GetMac(const Napi::CallbackInfo& info) {
  ExpectArgs(info, "getMac", "s");
  Link l(info, 0);
  l.Ioctl(info.Env(), SIOCGIFHWADDR, "ioctl(SIOCGIFHWADDR)");
  return Napi::Buffer<uint8_t>::Copy(info.Env(), reinterpret_cast<uint8_t*>(l.ifr.ifr_hwaddr.sa_data), 6);
}

static Napi::Value SetMac(const Napi::CallbackInfo& info) {
  ExpectArgs(info, "setMac", "sb");
  Link l(info, 0);
  Napi::Uint8Array mac = info[1].As<Napi::Uint8Array>();
  if (mac.ByteLength() != 6) throw Napi::RangeError::New(info.Env(), "setMac: need 6 bytes");
  l.ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
  memcpy(l.ifr.ifr_hwaddr.sa_data, mac.Data(), 6);
  l.Ioctl(info.Env(), SIOCSIFHWADDR, "ioctl(SIOCSIFHWADDR)");
  return info.Env().Undefined();
}

static Napi::Value SetUp(const Napi::CallbackInfo& info) {
  ExpectArgs(info, "setUp", "so");
  Link l(info, 0);
  l.Ioctl(info.Env(), SIOCGIFFLAGS, "ioctl(SIOCGIFFLAGS)");
  l.ifr.ifr_flags = static_cast<short>(info[1].As<Napi::Boolean>().Value() ? l.ifr.ifr_flags | IFF_UP : l.ifr.ifr_flags & ~IFF_UP);
  l.Ioctl(info.Env(), SIOCSIFFLAGS, "ioctl(SIOCSIFFLAGS)");
  return info.Env().Undefined();
}

static Napi::Value IsUp(const Napi::CallbackInfo& info) {
  ExpectArgs(info, "isUp", "s");
  Link l(info, 0);
  l.Ioctl(info.Env(), SIOCGIFFLAGS, "ioctl(SIOCGIFFLAGS)");
  return Napi::Boolean::New(info.Env(), (l.ifr.ifr_flags & IFF_UP) != 0);
}

// getIpv4(name) -> 4 bytes: the interface's (primary) IPv4 address, whatever its carrier state.
static Napi::Value GetIpv4(const Napi::CallbackInfo& info) {
  ExpectArgs(info, "getIpv4", "s");
  Link l(info, 0);
  l.ifr.ifr_addr.sa_family = AF_INET;
  if (int err = l.Try(info.Env(), SIOCGIFADDR)) {
    throw SystemError(info.Env(), err, "ioctl(SIOCGIFADDR)", err == EADDRNOTAVAIL ? l.name + " has no IPv4 address" : NoDeviceHint(err, l.name));
  }
  struct sockaddr_in* sin = reinterpret_cast<struct sockaddr_in*>(&l.ifr.ifr_addr);
  return Napi::Buffer<uint8_t>::Copy(info.Env(), reinterpret_cast<uint8_t*>(&sin->sin_addr.s_addr), 4);
}

// bridgePort(bridge, port, add): brctl addif / delif.
static Napi::Value BridgePort(const Napi::CallbackInfo& info) {
  ExpectArgs(info, "bridgePort", "sso");
  Link br(info, 0);
  std::string port = NameArg(info, 1);
  bool add = info[2].As<Napi::Boolean>().Value();
  br.ifr.ifr_ifindex = static_cast<int>(IndexOf(info.Env(), port));
  if (int err = br.Try(info.Env(), add ? SIOCBRADDIF : SIOCBRDELIF)) {
    std::string hint = err == ENODEV ? "no bridge named " + br.name
                     : err == EOPNOTSUPP || err == EINVAL ? br.name + " is not a Linux bridge"
                     : err == EBUSY ? port + " is already a port of a bridge"
                     : NoDeviceHint(err, br.name);
    throw SystemError(info.Env(), err, add ? "ioctl(SIOCBRADDIF)" : "ioctl(SIOCBRDELIF)", hint);
  }
  return info.Env().Undefined();
}

// addAddress(name, family 4|6, bytes, prefixLen): `ip addr add` over rtnetlink (RTM_NEWADDR).
static Napi::Value AddAddress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ExpectArgs(info, "addAddress", "snbn");
  std::string name = NameArg(info, 0);
  int family = info[1].As<Napi::Number>().Int32Value() == 6 ? AF_INET6 : AF_INET;
  Napi::Uint8Array addr = info[2].As<Napi::Uint8Array>();
  int prefix = info[3].As<Napi::Number>().Int32Value();
  size_t alen = family == AF_INET6 ? 16 : 4;
  if (addr.ByteLength() != alen) throw Napi::RangeError::New(env, "addAddress: wrong address length");
  NlRequest<struct ifaddrmsg, 64> req(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
  req.msg.ifa_family = static_cast<unsigned char>(family);
  req.msg.ifa_prefixlen = static_cast<unsigned char>(prefix);
  req.msg.ifa_index = IndexOf(env, name);
  req.Add(IFA_LOCAL, addr.Data(), alen);
  req.Add(IFA_ADDRESS, addr.Data(), alen);
  req.Talk(env, "RTM_NEWADDR", name);
  return env.Undefined();
}

// setGsoMaxSegs(name, n): `ip link set dev NAME gso_max_segs N` over rtnetlink (IFLA_GSO_MAX_SEGS,
// Linux >= 5.19): the stack then never hands the device a GSO packet of more than n segments.
static Napi::Value SetGsoMaxSegs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ExpectArgs(info, "setGsoMaxSegs", "sn");
  std::string name = NameArg(info, 0);
  uint32_t segs = info[1].As<Napi::Number>().Uint32Value();
  NlRequest<struct ifinfomsg, 16> req(RTM_NEWLINK, 0);
  req.msg.ifi_family = AF_UNSPEC;
  req.msg.ifi_index = static_cast<int>(IndexOf(env, name));
  req.Add(IFLA_GSO_MAX_SEGS, &segs, sizeof segs);
  req.Talk(env, "RTM_NEWLINK", name);
  return env.Undefined();
}

// setNeigh(name, add, family 4|6, ip, mac): `ip neigh replace IP lladdr MAC dev NAME nud permanent`,
// or with add false `ip neigh del IP dev NAME` (already gone: no error). RTM_NEWNEIGH/RTM_DELNEIGH.
static Napi::Value SetNeigh(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ExpectArgs(info, "setNeigh", "sonbb");
  std::string name = NameArg(info, 0);
  bool add = info[1].As<Napi::Boolean>().Value();
  int family = info[2].As<Napi::Number>().Int32Value() == 6 ? AF_INET6 : AF_INET;
  Napi::Uint8Array ip = info[3].As<Napi::Uint8Array>();
  Napi::Uint8Array mac = info[4].As<Napi::Uint8Array>();
  size_t alen = family == AF_INET6 ? 16 : 4;
  if (ip.ByteLength() != alen || mac.ByteLength() != 6) throw Napi::RangeError::New(env, "setNeigh: wrong address length");
  NlRequest<struct ndmsg, 64> req(add ? RTM_NEWNEIGH : RTM_DELNEIGH, add ? NLM_F_CREATE | NLM_F_REPLACE : 0);
  req.msg.ndm_family = static_cast<unsigned char>(family);
  req.msg.ndm_ifindex = static_cast<int>(IndexOf(env, name));
  req.msg.ndm_state = NUD_PERMANENT;
  req.Add(NDA_DST, ip.Data(), alen);
  if (add) req.Add(NDA_LLADDR, mac.Data(), 6);
  req.Talk(env, add ? "RTM_NEWNEIGH" : "RTM_DELNEIGH", name, !add);
  return env.Undefined();
}

// setRoute(name, add, family 4|6, dst, prefixLen, gateway): `ip route replace DST/LEN via GW dev
// NAME onlink`, or with add false `ip route del DST/LEN via GW dev NAME` (already gone: no error).
static Napi::Value SetRoute(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ExpectArgs(info, "setRoute", "sonbnb");
  std::string name = NameArg(info, 0);
  bool add = info[1].As<Napi::Boolean>().Value();
  int family = info[2].As<Napi::Number>().Int32Value() == 6 ? AF_INET6 : AF_INET;
  Napi::Uint8Array dst = info[3].As<Napi::Uint8Array>();
  int prefix = info[4].As<Napi::Number>().Int32Value();
  Napi::Uint8Array gw = info[5].As<Napi::Uint8Array>();
  size_t alen = family == AF_INET6 ? 16 : 4;
  if (dst.ByteLength() != alen || gw.ByteLength() != alen || prefix < 0 || prefix > static_cast<int>(alen * 8)) throw Napi::RangeError::New(env, "setRoute: wrong address or prefix length");
  uint32_t idx = IndexOf(env, name);
  NlRequest<struct rtmsg, 128> req(add ? RTM_NEWROUTE : RTM_DELROUTE, add ? NLM_F_CREATE | NLM_F_REPLACE : 0);
  req.msg.rtm_family = static_cast<unsigned char>(family);
  req.msg.rtm_dst_len = static_cast<unsigned char>(prefix);
  req.msg.rtm_table = RT_TABLE_MAIN;
  req.msg.rtm_protocol = RTPROT_BOOT;
  req.msg.rtm_scope = add ? RT_SCOPE_UNIVERSE : RT_SCOPE_NOWHERE;
  req.msg.rtm_type = RTN_UNICAST;
  req.msg.rtm_flags = RTNH_F_ONLINK;
  req.Add(RTA_DST, dst.Data(), alen);
  req.Add(RTA_GATEWAY, gw.Data(), alen);
  req.Add(RTA_OIF, &idx, sizeof idx);
  req.Talk(env, add ? "RTM_NEWROUTE" : "RTM_DELROUTE", name, !add);
  return env.Undefined();
}

void InitLink(Napi::Env env, Napi::Object exports) {
  exports.Set("setNeigh", Napi::Function::New(env, SetNeigh, "setNeigh"));
  exports.Set("setRoute", Napi::Function::New(env, SetRoute, "setRoute"));
  exports.Set("ifindex", Napi::Function::New(env, IfIndex, "ifindex"));
  exports.Set("getMtu", Napi::Function::New(env, GetMtu, "getMtu"));
  exports.Set("setMtu", Napi::Function::New(env, SetMtu, "setMtu"));
  exports.Set("getMac", Napi::Function::New(env, GetMac, "getMac"));
  exports.Set("setMac", Napi::Function::New(env, SetMac, "setMac"));
  exports.Set("setUp", Napi::Function::New(env, SetUp, "setUp"));
  exports.Set("isUp", Napi::Function::New(env, IsUp, "isUp"));
  exports.Set("bridgePort", Napi::Function::New(env, BridgePort, "bridgePort"));
  exports.Set("addAddress", Napi::Function::New(env, AddAddress, "addAddress"));
  exports.Set("getIpv4", Napi::Function::New(env, GetIpv4, "getIpv4"));
  exports.Set("setGsoMaxSegs", Napi::Function::New(env, SetGsoMaxSegs, "setGsoMaxSegs"));
}

}  // namespace uvtep
