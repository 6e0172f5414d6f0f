// System errors for JS: Error with code (errno name), errno, syscall, and a message that says
// what to do for the common cases (not root, no /dev/net/tun, name in use).
#pragma once
#include <napi.h>
#include <string>

namespace uvtep {

const char* ErrnoName(int err);

// Builds the Error; `syscall` like "ioctl(TUNSETIFF)", `hint` is appended to the message.
Napi::Error SystemError(Napi::Env env, int err, const char* syscall, const std::string& hint = "");

// Calls a JS callback from a libuv callback (inside a HandleScope the caller opened); a JS
// exception becomes the process's uncaught exception, as Node does for its own callbacks.
void CallJs(Napi::Env env, const Napi::FunctionReference& fn, napi_value recv, const std::initializer_list<napi_value>& args, napi_async_context ctx);

// Calls fn(count) on the object `self` wraps from a libuv callback, in a HandleScope of its own
// (the object's value is taken inside it): how a reader hands JS a batch.
template <typename T>
void CallBatch(Napi::ObjectWrap<T>* self, const Napi::FunctionReference& fn, int count, napi_async_context ctx) {
  Napi::Env env = self->Env();
  Napi::HandleScope scope(env);
  CallJs(env, fn, self->Value(), {Napi::Number::New(env, count)}, ctx);
}

// Throws unless `info[i]` has the expected type. Semantics are checked in TypeScript.
void ExpectArgs(const Napi::CallbackInfo& info, const char* fn, const char* types);

}  // namespace uvtep
