// System errors for JS: Error with code (errno name), errno, syscall, and a message that says
// what to do for the common cases (not root, no /dev/net/tun, name in use).
#pragma once
#include <napi.h>
#include <string>

namespace uvtep {

const char* ErrnoName(int err);

// Builds the Error; `syscall` like "ioctl(TUNSETIFF)", `hint` is appended to the message.
Napi::Error SystemError(Napi::Env env, int err, const char* syscall, const std::string& hint = "");

// Throws unless `info[i]` has the expected type. Semantics are checked in TypeScript.
void ExpectArgs(const Napi::CallbackInfo& info, const char* fn, const char* types);

}  // namespace uvtep
