// Pictures of what one distillation step sees, for `retort-inspect --distill CONFIG --images DIR`: the
// input images, every tapped feature of both networks and every map a strategy shows (SoKD's DAM
// masks, augmented teacher features, ...) as 8-bit RGB pictures, written as PNG files beside an
// index.html that lays them out one row per sample (docs/cli.md, "Looking at a distillation step").
//
// How a tensor becomes a picture:
//   - an input image [C, H, W] (C = 1 or 3) is un-normalised (x·std + mean); a result outside [0, 1]
//     is scaled by its own minimum and maximum instead;
//   - a feature [C, H, W] becomes its attention map mean_c x² (AT's map for p = 2: where the feature is
//     strong, whatever its sign or channel order — a channel shuffle does not show);
//   - a map [H, W] (or the attention map above) is coloured by its own minimum (dark blue) and maximum
//     (yellow) with the viridis colour scale; a constant map is all dark blue, non-finite values magenta;
//   - a mask [H, W] (a name ending in "mask") is also drawn over the input: non-zero locations tinted red.
// Every picture is enlarged by nearest neighbour to the input's size times `scale`, so an 8x8 feature of a
// 32x32 input shows as 4x4 blocks.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace retort {

struct RgbImage {
  int64_t height = 0, width = 0;
  std::vector<uint8_t> rgb;  // row-major, 3 bytes per pixel

  RgbImage() = default;
  RgbImage(int64_t h, int64_t w) : height(h), width(w), rgb(static_cast<size_t>(h * w * 3), 0) {}
  uint8_t* at(int64_t y, int64_t x) { return rgb.data() + (y * width + x) * 3; }
  const uint8_t* at(int64_t y, int64_t x) const { return rgb.data() + (y * width + x) * 3; }
};

// An input image [C, H, W], C = 1 (grey) or 3 (RGB), given normalised by per-channel `mean` and `std`
// (both empty: not normalised).
RgbImage input_picture(const Tensor& image, const std::vector<double>& mean, const std::vector<double>& std);

// A map [H, W], or a feature [C, H, W] through its attention map mean_c x², in the viridis colours.
// `range` (if given) receives the map's finite minimum and maximum.
RgbImage heat_picture(const Tensor& map, std::pair<double, double>* range = nullptr);

// The viridis colour of t in [0, 1] (clamped), linear between its five anchor colours.
void viridis(double t, uint8_t out[3]);

// `base` with every location where `mask` [h, w] is non-zero tinted half way to red; the mask is
// brought to the base's size by nearest neighbour.
RgbImage mask_overlay(const RgbImage& base, const Tensor& mask);

// Nearest-neighbour resize.
RgbImage resized(const RgbImage& image, int64_t height, int64_t width);

// `s` with & < > " written as HTML entities.
std::string html_escape(const std::string& s);

// Writes `image` as a PNG file, atomically; errors name the path.
void write_png(const std::string& path, const RgbImage& image);

// One step's pictures: `inputs` [B, C, H, W] (normalised as the config says), `targets` [B] and the
// model's (the student's) `logits` [B, K] (the row titles: label and top-1; may be undefined), and `views`: name -> tensor of
// [B, C, h, w] (features) or [B, h, w] (maps, masks) in F32 or F64; other views (logits, integer boxes
// and indices) are listed on the page with their shapes but not drawn. `scale` 0: the smallest that
// makes pictures at least 96 pixels high. Writes DIR/index.html and DIR/sample<i>_<n>.png for every
// sample i and column n (the directory is created); `notes` are lines of text shown above the table
// (the strategies' inspect_text). `relation_views` names views that are [B, B] relations between the
// batch's samples (Distiller::relation_views: SP's similarities, PKT's probabilities, RKD's distances):
// each is drawn once, as a B×B matrix (row i, column j: samples i and j), to DIR/batch_<n>.png in a
// section below the table; a named view of another shape is an error naming it, a name not among the
// views is skipped. Returns the number of PNG files written.
int64_t write_step_pictures(const std::string& dir, const Tensor& inputs, const Tensor& targets,
                            const Tensor& logits, const std::vector<std::pair<std::string, Tensor>>& views,
                            const std::vector<double>& mean, const std::vector<double>& std, int64_t scale,
                            const std::string& title, const std::vector<std::string>& notes = {},
                            const std::vector<std::string>& relation_views = {});

}  // namespace retort
