// The flow cache: forwarding decisions TypeScript made, applied in native code to the packets
// that come after, so that a batch which only repeats known decisions never wakes JS (a lone
// ping crossing uvtep costs a syscall or two, not a trip through the event loop into V8). The
// kernel's Open vSwitch datapath holds the flows ovs-vswitchd installs in the same way.
//
// TypeScript stays in charge: it installs an entry only after it forwarded a packet the same way
// itself (tx: this unicast MAC goes to this one remote; rx: this source MAC is already learned at
// this underlay address), clears the whole cache whenever the FDB or the policy changes, and
// turns it off for everything the cache does not model (source filters, station tracking, ARP
// suppression, per-packet TOS/TTL, source-port ranges). A batch is taken here only when every
// packet in it qualifies; otherwise all of it goes to JS as before, so the order within a flow
// is never changed.
#pragma once
#include <cstdint>

namespace uvtep {

class FlowCache;

// Encapsulation, from TapReader::Drain: entries i < n of a read batch (segs[i] frames from slab +
// offs[i] at a stride of lens[i] + 8 bytes, the last lasts[i] bytes: one frame, or a super-frame
// the reader split). A super-frame leaves as UDP GSO messages (with gso), and consecutive single
// frames of one size to one destination as one. Returns how many leading entries were sent whole
// (n: all of them; 0: none qualified or the first send failed); an entry sent in part is left as
// its unsent rest (offs[i] and segs[i] advanced). The caller hands the rest to JS.
int FlowCacheEncap(FlowCache* fc, uint8_t* slab, int32_t* offs, const int32_t* lens, int32_t* segs, const int32_t* lasts, int n);

// Decapsulation, from UdpSocket::Drain: the messages of one recvmmsg (see udp.cc for the arrays),
// a UDP GRO message taken datagram by datagram.
// `find(vni)` gives the VTEP's cache or null. Returns the number of TAP writes when every message
// qualified and was written to its TAP (the caller then delivers nothing to JS), -1 when none was
// touched.
using FlowCacheFinder = FlowCache* (*)(void* ctx, uint32_t vni);
int FlowCacheDecap(FlowCacheFinder find, void* ctx, uint8_t* slab, const int32_t* offs, const int32_t* lens, const int32_t* segs,
                    const int16_t* tos, const uint8_t* srcs, int srcStride, int n);

}  // namespace uvtep
