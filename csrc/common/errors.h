// Error messages without std::ostream. The TORCH_CHECK family formats several message
// arguments through an ostringstream (c10::str); with some compiler/runtime pairings (seen on
// an H100 machine, and reproducible there with a five-line load_inline extension) streaming a
// number from an extension crashes the process with SIGSEGV instead of raising. Every message
// is therefore built here by string concatenation, numbers through snprintf, and the checks
// below hand TORCH_CHECK exactly one std::string, which c10::str returns untouched.
// tests/test_build.py fails if csrc/ streams into an ostream or calls TORCH_CHECK directly.
#pragma once
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

namespace dgm_ext::msg {

inline std::string part(const std::string& s) { return s; }
inline std::string part(const char* s) { return s; }
inline std::string part(bool v) { return v ? "true" : "false"; }
inline std::string part(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}
template <class I, std::enable_if_t<std::is_integral_v<I> && !std::is_same_v<I, bool>, int> = 0>
std::string part(I v) {
  char buf[32];
  if constexpr (std::is_signed_v<I>) {
    std::snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(v));
  } else {
    std::snprintf(buf, sizeof(buf), "%llu", static_cast<unsigned long long>(v));
  }
  return buf;
}
inline std::string part(c10::ScalarType st) { return c10::toString(st); }
inline std::string part(const c10::Device& d) { return d.str(); }
// A shape, Python style: (2, 3), (5,), ().
inline std::string part(c10::IntArrayRef s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += part(s[i]);
  }
  out += s.size() == 1 ? ",)" : ")";
  return out;
}
inline std::string part(const std::vector<int64_t>& s) { return part(c10::IntArrayRef(s)); }

// Concatenates the parts of a message into one string.
template <class... A>
std::string cat(const A&... a) {
  std::string out;
  (out.append(part(a)), ...);
  return out;
}

}  // namespace dgm_ext::msg

// The message arguments are evaluated only when the check fails.
#define DGM_CHECK_VALUE(cond, ...) TORCH_CHECK_VALUE(cond, ::dgm_ext::msg::cat(__VA_ARGS__))
#define DGM_CHECK_TYPE(cond, ...) TORCH_CHECK_TYPE(cond, ::dgm_ext::msg::cat(__VA_ARGS__))
