// System errors and argument checks for JS (declared in errors.h): one home, used by every part of
// the addon.
#include <napi.h>
#include <uv.h>
#include <cerrno>
#include <cstring>
#include <string>
#include "errors.h"

namespace uvtep {

// The errno's name as Node spells it (libuv's table), plus the Linux ones libuv does not map.
const char* ErrnoName(int err) {
  switch (err) {
    case EBADFD: return "EBADFD";
    case ENOMEDIUM: return "ENOMEDIUM";
    default: break;
  }
  const char* name = uv_err_name(-err);
  return strncmp(name, "Unknown", 7) == 0 ? "EUNKNOWN" : name;
}

Napi::Error SystemError(Napi::Env env, int err, const char* syscall, const std::string& hint) {
  std::string msg = std::string(syscall) + " failed: " + ErrnoName(err) + " (" + strerror(err) + ")";
  if (!hint.empty()) msg += ": " + hint;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, ErrnoName(err)));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

void CallJs(Napi::Env env, const Napi::FunctionReference& fn, napi_value recv, const std::initializer_list<napi_value>& args, napi_async_context ctx) {
  try {
    fn.MakeCallback(recv, args, ctx);
  } catch (const Napi::Error& e) {
    napi_fatal_exception(env, e.Value());
  }
}

void ExpectArgs(const Napi::CallbackInfo& info, const char* fn, const char* types) {
  // types: one letter per argument: s string, n number, b buffer/typed array, f function, o boolean, x object
  for (size_t i = 0; types[i] != '\0'; i++) {
    Napi::Value v = info[i];
    bool ok = false;
    switch (types[i]) {
      case 's': ok = v.IsString(); break;
      case 'n': ok = v.IsNumber(); break;
      case 'b': ok = v.IsTypedArray() || v.IsBuffer(); break;
      case 'f': ok = v.IsFunction(); break;
      case 'o': ok = v.IsBoolean(); break;
      case 'x': ok = v.IsObject(); break;
    }
    if (!ok) {
      Napi::TypeError e = Napi::TypeError::New(info.Env(), std::string(fn) + ": argument " + std::to_string(i) + " has the wrong type");
      e.Set("code", Napi::String::New(info.Env(), "ERR_INVALID_ARG_TYPE"));
      throw e;
    }
  }
}

}  // namespace uvtep
