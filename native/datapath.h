// The datapath process, seen from the addon (datapath.cc): the control socket to it, the memory
// both map, and the objects registered with it. See dpproto.h for the protocol.
#pragma once
#include <napi.h>
#include <cstddef>
#include <cstdint>

namespace uvtep {

class Datapath;
class Tap;
class UdpSocket;

// null for null or undefined, a TypeError for anything else
Datapath* DatapathOf(Napi::Env env, Napi::Value v);
uint32_t DatapathNewId(Datapath* dp);
// the id the TAP / socket was registered under, 0 when it was not
uint32_t DatapathTapId(Datapath* dp, const Tap* tap);
uint32_t DatapathUdpId(Datapath* dp, const UdpSocket* s);
// The Node side of object `id`'s proxy socket, -1 for none.
int DatapathProxyFd(Datapath* dp, uint32_t id);
// Byte offset of p[0, bytes) in the shared memory, -1 when it is not all inside.
int64_t DatapathOffset(Datapath* dp, const void* p, size_t bytes);
// A control message without an answer: false when the process is gone.
bool DatapathSend(Datapath* dp, const void* msg, size_t len);
// A control message the process answers (kDpReply): false when it is gone or did not answer.
bool DatapathCall(Datapath* dp, const void* msg, size_t len);

// The reader side of a proxy answers the entries it handed JS (*pending, then zeroed): the
// process reads that device on only when everything it handed over was answered (dpproto.h).
void DatapathAnswer(int proxyFd, uint32_t* pending);

void InitDatapath(Napi::Env env, Napi::Object exports);

}  // namespace uvtep
