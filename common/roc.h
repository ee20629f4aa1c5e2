#ifndef ECHOFED_COMMON_ROC_H_
#define ECHOFED_COMMON_ROC_H_

// One-vs-rest ROC curves of the binned scores. Their AUCs, with DeLong's
// variance, are computed in roc.cc and reported by Summarize
// (common/metrics.h) and, per site, by AucStudies
// (common/meta_analysis.h).

#include "common/intervals.h"

namespace echofed {

// One point of a one-vs-rest ROC curve: images with p_c >= threshold are
// called positive. The first point (0, 0) has threshold +infinity.
struct RocPoint {
  double threshold = kNaN;
  double false_positive_rate = kNaN;
  double true_positive_rate = kNaN;
};

}  // namespace echofed

#endif  // ECHOFED_COMMON_ROC_H_
