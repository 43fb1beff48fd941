// pci::PciIds: names of PCI vendors, devices, subsystems and classes from the pci.ids database
// (https://pci-ids.ucw.cz; Debian package `pci.ids`, /usr/share/misc/pci.ids). Our own reader:
// libpci is GPL and is not linked.
//
// The file's format: '#' starts a comment line; blank lines are ignored;
//   vvvv  vendor name
//   <TAB>dddd  device name
//   <TAB><TAB>ssvv ssdd  subsystem name
//   C cc  class name
//   <TAB>ss  subclass name
//   <TAB><TAB>pp  programming interface name
// Ids are lowercase hex; at least one space separates the id(s) from the name. Other one-letter
// sections ("X xx  name") are skipped with their indented lines.
//
// The *_text functions reproduce lspci 3.9's wording, unknown ids included (checked against
// `lspci -i <file> -F <dump>` with entries removed; the unit tests pin each case):
//                          lspci (IdStyle::names)            lspci -nn (IdStyle::names_and_numbers)
//   class, known subclass  Ethernet controller               Ethernet controller [0200]
//   unknown subclass       Network controller [0277]         Network controller [0277]
//   unknown class          Class ab00                        Class [ab00]
//   vendor+device known    Red Hat, Inc. Virtio ... device   Red Hat, Inc. Virtio ... [1af4:1041]
//   unknown device         Intel Corporation Device 0d57     Intel Corporation Device [8086:0d57]
//   unknown vendor         Device 1234:11e8                  Device [1234:11e8]
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace ring3::pci {

enum class IdStyle {
    names,              // as `lspci`
    names_and_numbers,  // as `lspci -nn`
};

class PciIds {
  public:
    // An empty database: every name falls back to numbers.
    PciIds() = default;

    // The database the tools use: $RING3_PCI_IDS when set, else the first of
    // /usr/share/misc/pci.ids, /usr/share/hwdata/pci.ids, /usr/share/pci.ids that exists. Never
    // throws for a missing or malformed file: the result is then empty and problem() says why.
    static PciIds load_default();
    // Reads and parses one file; throws ring3::Error naming it when it cannot be read or a line
    // is malformed ("parse /x/pci.ids: line 12: ...").
    static PciIds load_file(const std::string& path);
    // Parses text; `source` names it in errors.
    static PciIds parse(std::string_view text, const std::string& source);

    bool empty() const noexcept { return vendors_.empty() && classes_.empty(); }
    const std::string& source() const noexcept { return source_; }    // the file read, if any
    const std::string& problem() const noexcept { return problem_; }  // why it is empty, if so

    // Raw lookups: nullopt when the database has no entry. The views live as long as this object.
    std::optional<std::string_view> vendor_name(std::uint16_t vendor) const;
    std::optional<std::string_view> device_name(std::uint16_t vendor, std::uint16_t device) const;
    // Only the entry listed under vendor:device (lspci uses no other).
    std::optional<std::string_view> subsystem_name(std::uint16_t vendor, std::uint16_t device,
                                                   std::uint16_t subsystem_vendor,
                                                   std::uint16_t subsystem_device) const;
    std::optional<std::string_view> class_name(std::uint8_t base_class) const;
    std::optional<std::string_view> subclass_name(std::uint8_t base_class,
                                                  std::uint8_t subclass) const;
    std::optional<std::string_view> prog_if_name(std::uint8_t base_class, std::uint8_t subclass,
                                                 std::uint8_t prog_if) const;

    // The class part of an lspci line, from a 24-bit class code (the prog-if is ignored).
    std::string class_text(std::uint32_t class_code, IdStyle style) const;
    // The vendor and device part of an lspci line (see the table above).
    std::string device_text(std::uint16_t vendor, std::uint16_t device, IdStyle style) const;
    // lspci -v's "Subsystem:" text. The name is the entry under vendor:device, else, when the
    // subsystem ids equal the device's own, the device's name:
    //   "Red Hat, Inc. Virtio 1.0 block device", "Red Hat, Inc. Device 1100",
    //   unknown subsystem vendor: "Device abcd:0001" (even when the entry has a name);
    //   -nn: "Intel Corporation Gigabit CT Desktop Adapter [8086:0000]", "Device [abcd:0001]".
    std::string subsystem_text(std::uint16_t vendor, std::uint16_t device,
                               std::uint16_t subsystem_vendor, std::uint16_t subsystem_device,
                               IdStyle style) const;
    // lspci -v shows a Subsystem line only when the subsystem vendor is neither 0000 nor ffff.
    static bool has_subsystem(std::uint16_t subsystem_vendor) noexcept {
        return subsystem_vendor != 0x0000 && subsystem_vendor != 0xffff;
    }
    // lspci -v's "(prog-if 02 [NVM Express])"; "(prog-if 10)" for an unnamed non-zero one; empty
    // for an unnamed zero.
    std::string prog_if_text(std::uint32_t class_code) const;

    // The separate fields of `lspci -vmm` (-vmmnn with names_and_numbers):
    //   vendor:            "Red Hat, Inc."          unknown: "Vendor 1234"      ("Vendor [1234]")
    //   device:            "QEMU NVM Express ..."   unknown: "Device 11e8"      ("Device [11e8]")
    //   subsystem vendor:  "Red Hat, Inc."          unknown: "Unknown vendor 1234"
    //   subsystem device:  as subsystem_text's name unknown: "Device 0001"
    std::string vendor_field(std::uint16_t vendor, IdStyle style) const;
    std::string device_field(std::uint16_t vendor, std::uint16_t device, IdStyle style) const;
    std::string subsystem_vendor_field(std::uint16_t subsystem_vendor, IdStyle style) const;
    std::string subsystem_device_field(std::uint16_t vendor, std::uint16_t device,
                                       std::uint16_t subsystem_vendor,
                                       std::uint16_t subsystem_device, IdStyle style) const;

  private:
    struct Device {
        std::string name;
        std::map<std::uint32_t, std::string> subsystems;  // subsystem vendor << 16 | device
    };
    struct Vendor {
        std::string name;
        std::map<std::uint16_t, Device> devices;
    };
    struct Subclass {
        std::string name;
        std::map<std::uint8_t, std::string> prog_ifs;
    };
    struct Class {
        std::string name;
        std::map<std::uint8_t, Subclass> subclasses;
    };

    std::optional<std::string_view> subsystem_device_name(std::uint16_t vendor,
                                                          std::uint16_t device,
                                                          std::uint16_t subsystem_vendor,
                                                          std::uint16_t subsystem_device) const;

    std::map<std::uint16_t, Vendor> vendors_;
    std::map<std::uint8_t, Class> classes_;
    std::string source_;
    std::string problem_;
};

}  // namespace ring3::pci
