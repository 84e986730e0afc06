#include "distill/pictures.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>

#include "distill/run_dir.h"
#include "engine/error.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#pragma GCC diagnostic pop

namespace retort {

namespace {

// Host float64 copy of a tensor's elements.
std::vector<double> host_values(const Tensor& t) { return t.to(Device::cpu()).to_vector(); }

uint8_t to_byte(double v) { return static_cast<uint8_t>(std::lround(std::clamp(v, 0.0, 1.0) * 255.0)); }

// The finite minimum and maximum of n values (lo > hi when none is finite).
std::pair<double, double> finite_range(const double* v, int64_t n) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (int64_t i = 0; i < n; ++i)
    if (std::isfinite(v[i])) lo = std::min(lo, v[i]), hi = std::max(hi, v[i]);
  return {lo, hi};
}

// Colours a map of h x w values by its own finite minimum and maximum.
RgbImage colour_map(const double* v, int64_t h, int64_t w, std::pair<double, double>* range) {
  const auto [lo, hi] = finite_range(v, h * w);
  if (range) *range = lo <= hi ? std::make_pair(lo, hi) : std::make_pair(std::nan(""), std::nan(""));
  RgbImage out(h, w);
  for (int64_t i = 0; i < h * w; ++i) {
    uint8_t* p = out.rgb.data() + i * 3;
    if (!std::isfinite(v[i])) {
      p[0] = 255, p[1] = 0, p[2] = 255;  // magenta: NaN or infinite
      continue;
    }
    viridis(hi > lo ? (v[i] - lo) / (hi - lo) : 0.0, p);
  }
  return out;
}

// mean_c x² of a [C, H, W] block of values.
std::vector<double> attention(const double* v, int64_t c, int64_t hw) {
  std::vector<double> a(static_cast<size_t>(hw), 0.0);
  for (int64_t k = 0; k < c; ++k)
    for (int64_t i = 0; i < hw; ++i) a[static_cast<size_t>(i)] += v[k * hw + i] * v[k * hw + i];
  for (double& x : a) x /= static_cast<double>(c);
  return a;
}

// The heat picture of a map [h, w] (c == 0) or of a feature [c, h, w] through its attention map.
RgbImage heat_values(const double* v, int64_t c, int64_t h, int64_t w, std::pair<double, double>* range) {
  if (c == 0) return colour_map(v, h, w, range);
  return colour_map(attention(v, c, h * w).data(), h, w, range);
}

RgbImage overlay_values(const RgbImage& base, const double* m, int64_t h, int64_t w) {
  RgbImage out = base;
  for (int64_t y = 0; y < base.height; ++y)
    for (int64_t x = 0; x < base.width; ++x) {
      if (m[(y * h / base.height) * w + x * w / base.width] == 0) continue;
      uint8_t* p = out.at(y, x);
      p[0] = static_cast<uint8_t>((p[0] + 255 + 1) / 2), p[1] = static_cast<uint8_t>(p[1] / 2),
      p[2] = static_cast<uint8_t>(p[2] / 2);
    }
  return out;
}

RgbImage input_values(const double* v, int64_t c, int64_t h, int64_t w, const std::vector<double>& mean,
                      const std::vector<double>& std) {
  const int64_t hw = h * w;
  std::vector<double> x(v, v + c * hw);
  if (!mean.empty())
    for (int64_t k = 0; k < c; ++k)
      for (int64_t i = 0; i < hw; ++i) x[static_cast<size_t>(k * hw + i)] = x[static_cast<size_t>(k * hw + i)] * std[static_cast<size_t>(k)] + mean[static_cast<size_t>(k)];
  const auto [lo, hi] = finite_range(x.data(), c * hw);
  if (lo <= hi && (lo < 0 || hi > 1))  // not an image in [0, 1]: show it by its own range
    for (double& e : x) e = hi > lo ? (e - lo) / (hi - lo) : 0.0;
  RgbImage out(h, w);
  for (int64_t i = 0; i < hw; ++i)
    for (int j = 0; j < 3; ++j) out.rgb[static_cast<size_t>(i * 3 + j)] = to_byte(x[static_cast<size_t>((c == 3 ? j : 0) * hw + i)]);
  return out;
}

// An image [C, H, W] (rank 3) or a batch of them [B, C, H, W] (rank 4), C = 1 or 3, and a normalisation
// that fits it.
void check_input_shape(const Shape& s, size_t rank, const std::vector<double>& mean, const std::vector<double>& std) {
  const char* want = rank == 4 ? "a batch of images [B, C, H, W]" : "an image [C, H, W]";
  RETORT_CHECK(s.size() == rank && (s[rank - 3] == 1 || s[rank - 3] == 3), "pictures: ", shape_str(s), " is not ",
               want, " with C = 1 or 3");
  const size_t c = static_cast<size_t>(s[rank - 3]);
  RETORT_CHECK(mean.size() == std.size() && (mean.empty() || mean.size() == c), "pictures: normalisation of ",
               mean.size(), " means and ", std.size(), " stds for images of ", c, " channels");
}

std::string file_part(const std::string& name) {
  std::string out = name;
  for (char& ch : out)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '-' && ch != '_') ch = '_';
  return out;
}

constexpr int64_t kAutoHeight = 96;  // scale 0: pictures at least this many pixels high

// Whether a view is drawn: floating point, [B, C, h, w] (a feature) or [B, h, w] (a map); integer tensors
// (indices, boxes) and other ranks (logits) are listed on the page instead.
bool drawn(const Tensor& t) { return (t.dim() == 3 || t.dim() == 4) && (t.dtype() == DType::F32 || t.dtype() == DType::F64); }

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

std::string html_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += ch;
    }
  }
  return out;
}

void viridis(double t, uint8_t out[3]) {
  static constexpr double anchors[5][3] = {
      {68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  const double u = std::clamp(std::isfinite(t) ? t : 0.0, 0.0, 1.0) * 4.0;
  const int i = std::min(static_cast<int>(u), 3);
  const double f = u - i;
  for (int j = 0; j < 3; ++j)
    out[j] = static_cast<uint8_t>(std::lround(anchors[i][j] + f * (anchors[i + 1][j] - anchors[i][j])));
}

RgbImage input_picture(const Tensor& image, const std::vector<double>& mean, const std::vector<double>& std) {
  check_input_shape(image.shape(), 3, mean, std);
  const std::vector<double> v = host_values(image);
  return input_values(v.data(), image.size(0), image.size(1), image.size(2), mean, std);
}

RgbImage heat_picture(const Tensor& map, std::pair<double, double>* range) {
  RETORT_CHECK(map.dim() == 2 || map.dim() == 3, "pictures: a map is [H, W] or a feature [C, H, W], not ",
               shape_str(map.shape()));
  const std::vector<double> v = host_values(map);
  return heat_values(v.data(), map.dim() == 3 ? map.size(0) : 0, map.size(-2), map.size(-1), range);
}

RgbImage mask_overlay(const RgbImage& base, const Tensor& mask) {
  RETORT_CHECK(mask.dim() == 2, "pictures: a mask is [H, W], not ", shape_str(mask.shape()));
  const std::vector<double> m = host_values(mask);
  return overlay_values(base, m.data(), mask.size(0), mask.size(1));
}

RgbImage resized(const RgbImage& image, int64_t height, int64_t width) {
  RETORT_CHECK(height > 0 && width > 0 && image.height > 0 && image.width > 0, "pictures: cannot resize a ",
               image.height, "x", image.width, " picture to ", height, "x", width);
  RgbImage out(height, width);
  for (int64_t y = 0; y < height; ++y)
    for (int64_t x = 0; x < width; ++x)
      std::copy_n(image.at(y * image.height / height, x * image.width / width), 3, out.at(y, x));
  return out;
}

void write_png(const std::string& path, const RgbImage& image) {
  RETORT_CHECK(image.height > 0 && image.width > 0 && image.rgb.size() == static_cast<size_t>(image.height * image.width * 3),
               "write_png '", path, "': a ", image.height, "x", image.width, " picture with ", image.rgb.size(), " bytes");
  std::string bytes;
  const int ok = stbi_write_png_to_func(
      [](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<const char*>(data), static_cast<size_t>(size)); },
      &bytes, static_cast<int>(image.width), static_cast<int>(image.height), 3, image.rgb.data(),
      static_cast<int>(image.width * 3));
  RETORT_CHECK(ok != 0, "write_png '", path, "': stb_image_write could not encode the picture");
  write_file_atomic(path, bytes);
}

int64_t write_step_pictures(const std::string& dir, const Tensor& inputs, const Tensor& targets,
                            const Tensor& logits, const std::vector<std::pair<std::string, Tensor>>& views,
                            const std::vector<double>& mean, const std::vector<double>& std, int64_t scale,
                            const std::string& title, const std::vector<std::string>& notes,
                            const std::vector<std::string>& relation_views) {
  check_input_shape(inputs.shape(), 4, mean, std);
  RETORT_CHECK(scale >= 0 && scale <= 64, "pictures: scale ", scale, " is not in [0, 64]");
  const int64_t b = inputs.size(0), c = inputs.size(1), h = inputs.size(2), w = inputs.size(3);
  if (scale == 0) scale = std::max<int64_t>(1, (kAutoHeight + h - 1) / std::max<int64_t>(h, 1));
  auto is_relation = [&](const std::string& name) {
    return std::find(relation_views.begin(), relation_views.end(), name) != relation_views.end();
  };
  for (const auto& [name, t] : views) {
    RETORT_CHECK(!drawn(t) || is_relation(name) || t.size(0) == b, "pictures: view '", name, "' of shape ",
                 shape_str(t.shape()), " has not the batch's ", b, " samples");
    RETORT_CHECK(!is_relation(name) || (t.dim() == 2 && t.size(0) == b && t.size(1) == b &&
                                        (t.dtype() == DType::F32 || t.dtype() == DType::F64)),
                 "pictures: view '", name, "' is named a relation between the batch's samples but is ", t.meta_str(),
                 ", not a float [", b, ", ", b, "] matrix");
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  RETORT_CHECK(!ec, "cannot create the picture directory '", dir, "': ", ec.message());

  const std::vector<double> x = host_values(inputs);
  const std::vector<double> y = targets.defined() ? host_values(targets) : std::vector<double>{};
  const std::vector<double> z = logits.defined() ? host_values(logits) : std::vector<double>{};
  const int64_t k = logits.defined() && logits.dim() == 2 && logits.size(0) == b ? logits.size(1) : 0;
  std::vector<std::vector<double>> values;  // per view, host copies
  for (const auto& [name, t] : views)
    values.push_back(drawn(t) || is_relation(name) ? host_values(t) : std::vector<double>{});

  std::string head = "<tr><th>sample</th><th>input</th>", rows, skipped;
  for (size_t v = 0; v < views.size(); ++v) {
    const auto& [name, t] = views[v];
    if (is_relation(name)) continue;  // drawn below the table
    if (!drawn(t)) {
      skipped += "<li>" + html_escape(name) + " " + t.meta_str() + "</li>\n";
      continue;
    }
    head += "<th>" + html_escape(name) + "<br><small>" + shape_str(t.shape()) + (t.dim() == 4 ? ", mean<sub>c</sub> x&sup2;" : "") + "</small></th>";
    if (t.dim() == 3 && ends_with(name, "mask")) head += "<th>" + html_escape(name) + " on the input</th>";
  }
  head += "</tr>\n";

  int64_t written = 0;
  const int64_t ph = h * scale, pw = w * scale;
  auto save = [&](const RgbImage& picture, const std::string& file) {
    write_png(dir + "/" + file, resized(picture, ph, pw));
    ++written;
    return "<img src=\"" + html_escape(file) + "\" width=\"" + std::to_string(pw) + "\" height=\"" + std::to_string(ph) + "\">";
  };
  for (int64_t i = 0; i < b; ++i) {
    const std::string s = "sample" + std::to_string(i);
    const RgbImage input = input_values(x.data() + i * c * h * w, c, h, w, mean, std);
    std::string row = "<tr><td>" + std::to_string(i);
    if (!y.empty()) row += "<br>label " + number(y[static_cast<size_t>(i)]);
    if (k > 0) {
      const double* zi = z.data() + i * k;
      row += "<br>predicted " + std::to_string(std::max_element(zi, zi + k) - zi);
    }
    row += "</td><td>" + save(input, s + "_input.png") + "</td>";
    for (size_t v = 0; v < views.size(); ++v) {
      const auto& [name, t] = views[v];
      if (!drawn(t) || is_relation(name)) continue;
      const int64_t vh = t.size(-2), vw = t.size(-1), per = t.numel() / b;
      const double* d = values[v].data() + i * per;
      std::pair<double, double> range;
      const RgbImage heat = heat_values(d, t.dim() == 4 ? t.size(1) : 0, vh, vw, &range);
      const std::string f = file_part(name);
      row += "<td>" + save(heat, s + "_" + f + ".png") + "<br><small>" + number(range.first) + " &ndash; " +
             number(range.second) + "</small></td>";
      if (t.dim() == 3 && ends_with(name, "mask"))
        row += "<td>" + save(overlay_values(input, d, vh, vw), s + "_" + f + "_on_input.png") + "</td>";
    }
    rows += row + "</tr>\n";
  }
  // Relations between the samples: one matrix per view, row i / column j = samples i and j above, each
  // entry a square of pixels so that the matrix is about 192 pixels wide.
  std::string relations;
  const int64_t rs = std::max<int64_t>(1, 192 / b);
  for (size_t v = 0; v < views.size(); ++v) {
    const auto& [name, t] = views[v];
    if (!is_relation(name)) continue;
    std::pair<double, double> range;
    const std::string f = "batch_" + file_part(name) + ".png";
    write_png(dir + "/" + f, resized(colour_map(values[v].data(), b, b, &range), b * rs, b * rs));
    ++written;
    relations += "<td><img src=\"" + html_escape(f) + "\" width=\"" + std::to_string(b * rs) + "\" height=\"" +
                 std::to_string(b * rs) + "\"><br>" + html_escape(name) + "<br><small>" + shape_str(t.shape()) + ", " +
                 number(range.first) + " &ndash; " + number(range.second) + "</small></td>";
  }
  if (!relations.empty())
    relations = "<p>Relations between the batch's samples (row i, column j: samples i and j of the table above):</p>\n"
                "<table><tr>" + relations + "</tr></table>\n";
  std::string note_html;
  for (const std::string& n : notes) note_html += "<p><code>" + html_escape(n) + "</code></p>\n";
  const std::string page =
      "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + html_escape(title) +
      "</title>\n<style>body{font-family:sans-serif} td,th{text-align:center;padding:4px;vertical-align:top} "
      "img{image-rendering:pixelated}</style></head><body>\n<h3>" + html_escape(title) +
      "</h3>\n" + note_html + "<p>Features are shown as their attention map mean<sub>c</sub> x&sup2;, maps and masks as they are; each "
      "picture is coloured by its own range (under it), dark blue = its minimum, yellow = its maximum, magenta = not "
      "finite. Masks are also drawn over the input in red.</p>\n<table>\n" + head + rows + "</table>\n" + relations +
      (skipped.empty() ? "" : "<p>Not drawn (not a floating-point feature or map):</p><ul>\n" + skipped + "</ul>\n") + "</body></html>\n";
  write_file_atomic(dir + "/index.html", page);
  return written;
}

}  // namespace retort
