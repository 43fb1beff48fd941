"""The test frames of `ring3 perf net`, rebuilt on the host from their documented layout
(include/ring3/net/frame.hpp), without any of ring3's code: the guest cases' hooks send them into a
NIC, and their checkers compare captured frames with them byte for byte. Also a reader for the
pcap files QEMU's filter-dump writes.

Layout (big-endian fields): Ethernet (destination, source, 0x0800); IPv4 (0x45, 0, total length,
id 0, DF, TTL 64, UDP, RFC 1071 checksum, 198.18.0.1 -> 198.18.0.2); UDP (1024 + stream -> 21043,
length, checksum 0); "r3nt", stream u16, sequence u64, check u32; then filler bytes: the seed's
pattern from byte 8 * (sequence % 61) on."""
import struct

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MIN_FRAME, MAX_FRAME = 60, 1514
FILLER_OFFSET = 60
ROTATIONS = 61
TEST_PORT = 21043
SOURCE_PORT_BASE = 1024


def mix(z):
    """splitmix64's finaliser (Steele, Lea, Flood 2014)."""
    z = (z + GOLDEN) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def checksum(data):
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def mac_bytes(text):
    return bytes(int(x, 16) for x in text.replace("-", ":").split(":"))


class Frames:
    """Builds the frames of one seed: frame(stream, sequence, length)."""

    def __init__(self, seed, source_mac, destination_mac="02:00:00:00:00:02"):
        self.seed = seed
        self.header_macs = mac_bytes(destination_mac) + mac_bytes(source_mac)
        words = (MAX_FRAME - FILLER_OFFSET + ROTATIONS * 8 + 7) // 8
        state, out = seed, []
        for _ in range(words):
            state = mix(state)
            out.append(struct.pack(">Q", state))
        self.pattern = b"".join(out)

    def check_word(self, stream, sequence, length):
        h = mix(mix(self.seed ^ (stream << 48) ^ length) ^ sequence)
        return (h ^ (h >> 32)) & 0xFFFFFFFF

    def length(self, stream, sequence, low, high):
        """The size ring3's generator draws for this frame of a `low-high` range."""
        if low == high:
            return low
        z = ((sequence ^ (stream << 48)) + self.seed) & MASK
        z = mix(z)
        return low + ((z * (high - low + 1)) >> 64)

    def frame(self, stream, sequence, length):
        ip = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, length - 14, 0, 0x4000, 64, 17, 0,
                                   bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])))
        struct.pack_into(">H", ip, 10, checksum(bytes(ip)))
        udp = struct.pack(">HHHH", SOURCE_PORT_BASE + stream, TEST_PORT, length - 34, 0)
        test = b"r3nt" + struct.pack(">HQI", stream, sequence,
                                     self.check_word(stream, sequence, length))
        start = (sequence % ROTATIONS) * 8
        filler = self.pattern[start:start + length - FILLER_OFFSET]
        return self.header_macs + b"\x08\x00" + bytes(ip) + udp + test + filler

    def parse(self, frame):
        """(stream, sequence) of something that looks like a test frame, else None."""
        if len(frame) < FILLER_OFFSET or frame[12:14] != b"\x08\x00" or frame[23] != 17 or \
                frame[36:38] != struct.pack(">H", TEST_PORT) or frame[42:46] != b"r3nt":
            return None
        stream, sequence = struct.unpack(">HQ", frame[46:56])
        return stream, sequence


def read_pcap(path):
    """The frames of a pcap file (microsecond or nanosecond, either byte order), in order."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise ValueError(f"{path}: {len(data)} bytes, no pcap header")
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        order = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = ">"
    else:
        raise ValueError(f"{path}: not a pcap file (magic {magic.hex()})")
    linktype = struct.unpack(order + "I", data[20:24])[0]
    if linktype != 1:
        raise ValueError(f"{path}: link type {linktype}, not Ethernet")
    frames, at = [], 24
    while at + 16 <= len(data):
        captured, original = struct.unpack(order + "II", data[at + 8:at + 16])
        at += 16
        if at + captured > len(data) or captured != original:
            raise ValueError(f"{path}: record at byte {at - 16} truncated "
                             f"({captured} of {original} bytes)")
        frames.append(data[at:at + captured])
        at += captured
    if at != len(data):
        raise ValueError(f"{path}: {len(data) - at} stray bytes at the end")
    return frames
