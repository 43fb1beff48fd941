// Which namespaces the block face drives, and what it says about the others (issue 7).
#include <gtest/gtest.h>

#include "ring3/nvme/block_device.hpp"

namespace ring3::nvme {
namespace {

NamespaceInfo plain() {
    NamespaceInfo ns;
    ns.id = 1;
    ns.size = 1 << 15;
    ns.formats = {LbaFormat{0, 512, 0}, LbaFormat{8, 512, 0}, LbaFormat{0, 4096, 0}};
    return ns;
}

TEST(NvmeNamespace, APlainNvmNamespaceIsABlockDevice) {
    EXPECT_EQ(block_face_refusal(plain()), "");
    NamespaceInfo ns = plain();
    ns.format_index = 2;  // 4 KiB blocks, no metadata
    EXPECT_EQ(block_face_refusal(ns), "");
}

TEST(NvmeNamespace, AZonedNamespaceIsRefusedByName) {
    NamespaceInfo ns = plain();
    ns.command_set = csi::zoned;
    EXPECT_EQ(block_face_refusal(ns),
              "it uses the Zoned Namespace command set (CSI 02h), where writes must go to a "
              "zone's write pointer; ring3's block face drives NVM command set namespaces only");
    ns.command_set = 0x30;
    EXPECT_EQ(block_face_refusal(ns),
              "it uses the unknown command set (CSI 30h); ring3's block face drives NVM command "
              "set namespaces only");
}

TEST(NvmeNamespace, MetadataAndProtectionAreRefusedWithTheFormat) {
    NamespaceInfo ns = plain();
    ns.format_index = 1;
    EXPECT_EQ(block_face_refusal(ns),
              "it is formatted with 8 bytes of metadata per 512-byte block (a separate metadata "
              "buffer, LBA format 1); ring3's block face does not transfer metadata: format the "
              "namespace with an LBA format without metadata");
    ns.metadata_extended = true;
    EXPECT_NE(block_face_refusal(ns).find("(extended LBAs, LBA format 1)"), std::string::npos);
    ns.protection = 1;
    EXPECT_EQ(block_face_refusal(ns),
              "it is formatted with end-to-end protection information (type 1, LBA format 1); "
              "ring3's block face does not generate or check it");
}

}  // namespace
}  // namespace ring3::nvme
