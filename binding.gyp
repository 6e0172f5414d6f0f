{
  "targets": [
    {
      "target_name": "uvtep",
      "sources": [
        "native/addon.cc",
        "native/errors.cc",
        "native/tap.cc",
        "native/reader.cc",
        "native/link.cc",
        "native/udp.cc",
        "native/offload.cc",
        "native/poller.cc",
        "native/flowcache.cc",
        "native/ring.cc",
        "native/udpmsg.cc",
        "native/flowtable.cc",
        "native/datapath.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      "target_name": "uvtep-datapath",
      "type": "executable",
      "sources": [
        "native/datapath/main.cc",
        "native/tunnel.cc",
        "native/flowtable.cc",
        "native/udpmsg.cc",
        "native/offload.cc",
        "native/ring.cc"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
