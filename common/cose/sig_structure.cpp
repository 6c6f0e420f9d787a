// The COSE Sig_structure that both signing (simulator) and verification sign over.
#include "common/cose/sig_structure.hpp"

#include "common/cbor/cbor_writer.hpp"

namespace fde::cose {

Bytes sig_structure(ByteView protected_header, ByteView payload) {
  // RFC 9052 section 4.4: context "Signature1", body_protected as received (never
  // re-encoded, or a non-deterministic sender's signature would not verify), empty
  // external_aad, payload as received (for virtCCA still holding the inner bstr, b.5).
  cbor::Writer writer;
  writer.array(4).text("Signature1").bytes(protected_header).bytes(ByteView{}).bytes(payload);
  return writer.take();
}

}  // namespace fde::cose
