#pragma once
#include <napi.h>

namespace uvtep {
void InitTap(Napi::Env env, Napi::Object exports);
void InitReader(Napi::Env env, Napi::Object exports);
void InitLink(Napi::Env env, Napi::Object exports);
void InitUdp(Napi::Env env, Napi::Object exports);
void InitPoller(Napi::Env env, Napi::Object exports);
}  // namespace uvtep
