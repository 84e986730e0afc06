// distill/pictures.h: the pictures retort-inspect --images draws — colours, attention maps of features,
// un-normalised inputs, mask overlays, PNG files read back, and one step's page.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#include <stb/stb_image.h>
#pragma GCC diagnostic pop

#include "distill/pictures.h"
#include "engine/error.h"

namespace retort {
namespace {

using Rgb = std::array<int, 3>;

Rgb pixel(const RgbImage& im, int64_t y, int64_t x) {
  const uint8_t* p = im.at(y, x);
  return {p[0], p[1], p[2]};
}
Rgb colour(double t) {
  uint8_t c[3];
  viridis(t, c);
  return {c[0], c[1], c[2]};
}
Tensor f64(const std::vector<double>& v, const Shape& s) { return Tensor::from_vector(v, s, DType::F64); }

std::string scratch(const std::string& name) {
  const std::string dir = testing::TempDir() + "pictures_" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

TEST(Pictures, ViridisHasItsAnchorsAndClamps) {
  EXPECT_EQ(colour(0), (Rgb{68, 1, 84}));
  EXPECT_EQ(colour(0.5), (Rgb{33, 145, 140}));
  EXPECT_EQ(colour(1), (Rgb{253, 231, 37}));
  EXPECT_EQ(colour(0.125), (Rgb{64, 42, 112}));  // half way between the first two anchors (rounded)
  EXPECT_EQ(colour(-3), colour(0));
  EXPECT_EQ(colour(7), colour(1));
  EXPECT_EQ(colour(std::nan("")), colour(0));
}

TEST(Pictures, AMapIsColouredByItsOwnRange) {
  std::pair<double, double> range;
  const RgbImage im = heat_picture(f64({0, 1, 2, 4}, {2, 2}), &range);
  ASSERT_EQ(im.height, 2);
  ASSERT_EQ(im.width, 2);
  EXPECT_EQ(pixel(im, 0, 0), colour(0));
  EXPECT_EQ(pixel(im, 0, 1), colour(0.25));
  EXPECT_EQ(pixel(im, 0, 1), (Rgb{59, 82, 139}));
  EXPECT_EQ(pixel(im, 1, 0), colour(0.5));
  EXPECT_EQ(pixel(im, 1, 1), colour(1));
  EXPECT_EQ(range, std::make_pair(0.0, 4.0));
  // Shifting and scaling the map changes nothing but the range.
  EXPECT_EQ(heat_picture(f64({-5, 5, 15, 35}, {2, 2}), &range).rgb, im.rgb);
  EXPECT_EQ(range, std::make_pair(-5.0, 35.0));
}

TEST(Pictures, AFeatureIsDrawnAsItsAttentionMap) {
  // Channels [1, -2, 0] and [1, 0, 3]: mean_c x² = [1, 2, 4.5], so (0, 1/3.5, 1) of the range.
  const RgbImage im = heat_picture(f64({1, -2, 0, 1, 0, 3}, {2, 1, 3}));
  EXPECT_EQ(pixel(im, 0, 0), colour(0));
  EXPECT_EQ(pixel(im, 0, 1), colour(1 / 3.5));
  EXPECT_EQ(pixel(im, 0, 2), colour(1));
  // The channels' order and signs do not show.
  EXPECT_EQ(heat_picture(f64({-1, 0, -3, 1, 2, 0}, {2, 1, 3})).rgb, im.rgb);
  EXPECT_THROW(heat_picture(f64({1, 2}, {2})), Error);
}

TEST(Pictures, ConstantAndNonFiniteMaps) {
  const RgbImage flat = heat_picture(f64({3, 3, 3, 3}, {2, 2}));
  for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(pixel(flat, i / 2, i % 2), colour(0));
  std::pair<double, double> range;
  const RgbImage im = heat_picture(f64({0, std::nan(""), INFINITY, 2}, {2, 2}), &range);
  EXPECT_EQ(pixel(im, 0, 1), (Rgb{255, 0, 255}));
  EXPECT_EQ(pixel(im, 1, 0), (Rgb{255, 0, 255}));
  EXPECT_EQ(pixel(im, 0, 0), colour(0));
  EXPECT_EQ(pixel(im, 1, 1), colour(1));
  EXPECT_EQ(range, std::make_pair(0.0, 2.0));
}

TEST(Pictures, TheInputIsUnNormalised) {
  // mean 0.5, std 0.25: -2 -> 0, 0 -> 0.5, 2 -> 1; grey in all three bytes.
  const RgbImage grey = input_picture(f64({-2, 0, 2, 1}, {1, 2, 2}), {0.5}, {0.25});
  EXPECT_EQ(pixel(grey, 0, 0), (Rgb{0, 0, 0}));
  EXPECT_EQ(pixel(grey, 0, 1), (Rgb{128, 128, 128}));
  EXPECT_EQ(pixel(grey, 1, 0), (Rgb{255, 255, 255}));
  EXPECT_EQ(pixel(grey, 1, 1), (Rgb{191, 191, 191}));
  // RGB, per-channel statistics.
  const RgbImage rgb = input_picture(f64({0, 1, -1}, {3, 1, 1}), {0.2, 0.4, 0.6}, {0.2, 0.2, 0.2});
  EXPECT_EQ(pixel(rgb, 0, 0), (Rgb{51, 153, 102}));
  // Not normalised and outside [0, 1]: drawn by its own range.
  const RgbImage raw = input_picture(f64({-4, 0, 4, 4}, {1, 2, 2}), {}, {});
  EXPECT_EQ(pixel(raw, 0, 0), (Rgb{0, 0, 0}));
  EXPECT_EQ(pixel(raw, 0, 1), (Rgb{128, 128, 128}));
  EXPECT_EQ(pixel(raw, 1, 1), (Rgb{255, 255, 255}));
  try {
    input_picture(f64({0, 0, 0}, {3, 1, 1}), {0.5}, {0.25});
    FAIL() << "a 1-channel normalisation of an RGB image was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1 means and 1 stds for images of 3 channels"), std::string::npos) << e.what();
  }
  EXPECT_THROW(input_picture(f64({0, 0}, {2, 1, 1}), {}, {}), Error);  // 2 channels
}

TEST(Pictures, AMaskTintsTheInputWhereItIsSet) {
  RgbImage base(4, 4);
  std::fill(base.rgb.begin(), base.rgb.end(), uint8_t{100});
  // A 2x2 mask over a 4x4 picture: its top-left cell covers the top-left 2x2 pixels.
  const RgbImage im = mask_overlay(base, f64({2, 0, 0, 0}, {2, 2}));
  for (int64_t y = 0; y < 4; ++y)
    for (int64_t x = 0; x < 4; ++x)
      EXPECT_EQ(pixel(im, y, x), (y < 2 && x < 2 ? Rgb{178, 50, 50} : Rgb{100, 100, 100})) << y << "," << x;
}

TEST(Pictures, ResizingIsNearestNeighbour) {
  RgbImage im(1, 2);
  im.at(0, 0)[0] = 10;
  im.at(0, 1)[0] = 20;
  const RgbImage big = resized(im, 2, 4);
  for (int64_t y = 0; y < 2; ++y)
    for (int64_t x = 0; x < 4; ++x) EXPECT_EQ(big.at(y, x)[0], x < 2 ? 10 : 20);
  EXPECT_THROW(resized(im, 0, 4), Error);
}

TEST(Pictures, PngFilesReadBackExactly) {
  const std::string dir = scratch("png");
  std::filesystem::create_directories(dir);
  RgbImage im(3, 5);
  for (size_t i = 0; i < im.rgb.size(); ++i) im.rgb[i] = static_cast<uint8_t>(i * 17);
  write_png(dir + "/a.png", im);
  int w = 0, h = 0, c = 0;
  stbi_uc* back = stbi_load((dir + "/a.png").c_str(), &w, &h, &c, 3);
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(w, 5);
  EXPECT_EQ(h, 3);
  EXPECT_EQ(std::vector<uint8_t>(back, back + w * h * 3), im.rgb);
  stbi_image_free(back);
  try {
    write_png(dir + "/no/such/dir/b.png", im);
    FAIL() << "writing into a missing directory succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no/such/dir/b.png"), std::string::npos) << e.what();
  }
}

// Views named as relations between the batch's samples (Distiller::relation_views) are drawn once each
// as a B×B matrix below the table; a [B, B] view not named so (SoKD's scores when area_num == B) is
// only listed; a named view of another shape is refused.
TEST(Pictures, RelationViewsAreDrawnAsOneMatrixPerBatch) {
  const std::string dir = scratch("relations");
  const int64_t b = 2;
  std::vector<double> x(b * 16, 0.5);
  const std::vector<std::pair<std::string, Tensor>> views{
      {"term.sp.student_similarity.layer3", f64({0, 1, 1, 0.5}, {b, b})},
      {"term.sokd.scores", f64({1, 2, 3, 4}, {b, b})}};
  const std::vector<std::string> relations{"term.sp.student_similarity.layer3", "term.sp.teacher_similarity.layer3"};
  const int64_t n = write_step_pictures(dir, f64(x, {b, 1, 4, 4}), Tensor(), Tensor(), views, {}, {}, 1, "relations", {},
                                        relations);
  EXPECT_EQ(n, b + 1);  // the inputs and one matrix (the teacher's is named but not shown: skipped)
  int w = 0, h = 0, c = 0;
  stbi_uc* m = stbi_load((dir + "/batch_term.sp.student_similarity.layer3.png").c_str(), &w, &h, &c, 3);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(w, 192);  // 96 pixels per entry
  EXPECT_EQ(h, 192);
  uint8_t lo[3], hi[3];
  viridis(0.0, lo);
  viridis(1.0, hi);
  EXPECT_EQ(std::vector<uint8_t>(m, m + 3), std::vector<uint8_t>(lo, lo + 3));                   // (0, 0): 0, the minimum
  EXPECT_EQ(std::vector<uint8_t>(m + 96 * 3, m + 97 * 3), std::vector<uint8_t>(hi, hi + 3));     // (0, 1): 1, the maximum
  stbi_image_free(m);
  std::ifstream in(dir + "/index.html");
  std::stringstream page;
  page << in.rdbuf();
  const std::string html = page.str();
  for (const char* want : {"Relations between the batch's samples", "src=\"batch_term.sp.student_similarity.layer3.png\"",
                           "term.sokd.scores f64[2, 2]"})
    EXPECT_NE(html.find(want), std::string::npos) << want;
  EXPECT_FALSE(std::filesystem::exists(dir + "/sample0_term.sokd.scores.png"));
  try {
    write_step_pictures(dir, f64(x, {b, 1, 4, 4}), Tensor(), Tensor(), {{"rel", f64({1, 2, 3, 4, 5, 6}, {b, 3})}}, {}, {},
                        1, "", {}, {"rel"});
    FAIL() << "a non-square relation view was drawn";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("view 'rel' is named a relation between the batch's samples but is f64[2, 3]"),
              std::string::npos) << e.what();
  }
}

TEST(Pictures, AStepsPageHasARowPerSampleAndAColumnPerView) {
  const std::string dir = scratch("step") + "/deeper";  // created with its parents
  const int64_t b = 2;
  std::vector<double> x(b * 16), feat(b * 3 * 4), mask(b * 16, 0.0);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(static_cast<double>(i));
  for (size_t i = 0; i < feat.size(); ++i) feat[i] = static_cast<double>(i % 5);
  mask[16 + 5] = 1;  // sample 1, location (1, 1)
  const std::vector<std::pair<std::string, Tensor>> views{{"student.layer1", f64(feat, {b, 3, 2, 2})},
                                                          {"term.sokd.mask", f64(mask, {b, 4, 4})},
                                                          {"term.kd.logits", f64({1, 2, 3, 4, 5, 6}, {b, 3})},
                                                          {"term.sokd.boxes", f64(x, {b, 2, 8}).to(DType::I64)}};
  const Tensor logits = f64({0, 5, 1, 7, 0, 0}, {b, 3});
  const int64_t n = write_step_pictures(dir, f64(x, {b, 1, 4, 4}), f64({1, 2}, {b}), logits, views, {0.5}, {0.25}, 3,
                                        "a <test> step", {"term sokd (sokd): sub-policy 3 & more"});
  EXPECT_EQ(n, b * 4);  // input, the feature, the mask and the mask on the input; not the logits or boxes
  for (const char* f : {"sample0_input.png", "sample1_student.layer1.png", "sample1_term.sokd.mask.png",
                        "sample1_term.sokd.mask_on_input.png"})
    EXPECT_TRUE(std::filesystem::is_regular_file(dir + "/" + f)) << f;
  int w = 0, h = 0, c = 0;
  stbi_uc* over = stbi_load((dir + "/sample1_term.sokd.mask_on_input.png").c_str(), &w, &h, &c, 3);
  ASSERT_NE(over, nullptr);
  EXPECT_EQ(w, 12);
  EXPECT_EQ(h, 12);
  // The masked location (1, 1) is pixels 3..5 at scale 3: tinted half way to red; (0, 0) is not.
  const stbi_uc* p = over + (4 * 12 + 4) * 3;
  const stbi_uc* q = over;
  EXPECT_GE(p[0], 128);
  EXPECT_EQ(p[1], p[2]);
  EXPECT_LE(p[1], 127);
  EXPECT_EQ(q[0], q[1]);  // grey
  stbi_image_free(over);
  std::ifstream in(dir + "/index.html");
  std::stringstream page;
  page << in.rdbuf();
  const std::string html = page.str();
  for (const char* want : {"a &lt;test&gt; step", "student.layer1", "term.sokd.mask on the input",
                           "label 2", "predicted 1", "predicted 0", "Not drawn", "term.kd.logits f64[2, 3]", "term.sokd.boxes i64[2, 2, 8]",
                           "src=\"sample1_term.sokd.mask.png\"", "<code>term sokd (sokd): sub-policy 3 &amp; more</code>"})
    EXPECT_NE(html.find(want), std::string::npos) << want;
  // A view whose batch is not the inputs' is refused, naming it.
  try {
    write_step_pictures(dir, f64(x, {b, 1, 4, 4}), Tensor(), Tensor(), {{"odd", f64(mask, {1, 2, 4, 4})}}, {}, {}, 1, "");
    FAIL() << "a view of another batch size was drawn";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("view 'odd'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace retort
