#include "site-agent/pacs/pacs_client.h"

#include "site-agent/pacs/dicomweb_client.h"
#include "site-agent/pacs/dimse_client.h"

namespace echofed {

absl::StatusOr<std::unique_ptr<PacsClient>> NewPacsClient(
    const PacsConfig& config) {
  if (!config.dicomweb_url().empty()) return NewDicomWebPacsClient(config);
  return NewDimsePacsClient(config);
}

}  // namespace echofed
