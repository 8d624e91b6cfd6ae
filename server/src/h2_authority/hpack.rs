//! The small part of HPACK (RFC 7541) the authority fix needs: a decoder that follows the
//! client's dynamic table, and an encoder that writes only "literal header field without
//! indexing" representations, so the server's own decoder never indexes anything.

use std::collections::VecDeque;

/// Why a header block could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HpackError {
    /// The block ends in the middle of a representation.
    Truncated,
    /// An integer longer than any sane header block needs.
    IntegerOverflow,
    /// Index 0, or past the end of the static and dynamic tables.
    BadIndex,
    /// A Huffman string with EOS inside, or padding that is not a prefix of EOS.
    BadHuffman,
    /// A dynamic table size update above the limit the server advertised, or after
    /// the first header field of the block.
    BadSizeUpdate,
    /// The decoded header list outgrew the limit given to [`Decoder::decode`].
    TooLarge,
}

/// The static table (RFC 7541 Appendix A); index `i` is entry `i + 1`.
pub(super) const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Bytes an entry counts for in the dynamic table besides its name and value.
const ENTRY_OVERHEAD: usize = 32;

/// The lowest static index whose name is `name`, to encode names by reference.
fn static_name_index(name: &[u8]) -> Option<usize> {
    // Names a gRPC request carries are tried first by position in the table; a linear
    // scan over 61 short names is cheaper than hashing for the few fields per request.
    STATIC_TABLE
        .iter()
        .position(|(static_name, _)| static_name.as_bytes() == name)
        .map(|position| position + 1)
}

/// A dynamic table entry: name and value.
type Entry = (Box<[u8]>, Box<[u8]>);

/// The decoder's copy of the client's dynamic table, newest entry first.
#[derive(Debug)]
struct DynamicTable {
    entries: VecDeque<Entry>,
    size: usize,
    max_size: usize,
}

impl DynamicTable {
    fn get(&self, index: usize) -> Option<(&[u8], &[u8])> {
        self.entries
            .get(index)
            .map(|(name, value)| (&name[..], &value[..]))
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            let Some((name, value)) = self.entries.pop_back() else {
                break;
            };
            self.size -= name.len() + value.len() + ENTRY_OVERHEAD;
        }
    }

    fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    /// Adds an entry, evicting the oldest ones; an entry larger than the whole table
    /// empties it and is not added (RFC 7541 §4.4).
    fn insert(&mut self, name: Box<[u8]>, value: Box<[u8]>) {
        let entry_size = name.len() + value.len() + ENTRY_OVERHEAD;
        if entry_size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - entry_size);
        self.size += entry_size;
        self.entries.push_front((name, value));
    }
}

/// Looks up a 1-based HPACK index in the static table, then the dynamic one.
fn lookup(table: &DynamicTable, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
    match index {
        0 => Err(HpackError::BadIndex),
        1..=61 => {
            let (name, value) = STATIC_TABLE[index - 1];
            Ok((name.as_bytes(), value.as_bytes()))
        }
        _ => table.get(index - 62).ok_or(HpackError::BadIndex),
    }
}

/// Decodes header blocks of one connection, in order, keeping the dynamic table in step
/// with the peer's encoder.
#[derive(Debug)]
pub(super) struct Decoder {
    table: DynamicTable,
    /// SETTINGS_HEADER_TABLE_SIZE as the server advertised it: the largest table the
    /// peer may ask for.
    size_limit: usize,
    name_scratch: Vec<u8>,
    value_scratch: Vec<u8>,
}

impl Decoder {
    /// A decoder for a peer told that the table may hold `size_limit` bytes.
    pub(super) fn new(size_limit: usize) -> Self {
        Self {
            table: DynamicTable {
                entries: VecDeque::new(),
                size: 0,
                max_size: size_limit,
            },
            size_limit,
            name_scratch: Vec::new(),
            value_scratch: Vec::new(),
        }
    }

    /// Decodes one complete header block, calling `emit(name, value, never_indexed)`
    /// for every field in order. Fails once the fields passed to `emit` add up to more
    /// than `max_list_bytes` (name + value + 32 each, as HTTP/2 counts a header list).
    pub(super) fn decode(
        &mut self,
        block: &[u8],
        max_list_bytes: usize,
        mut emit: impl FnMut(&[u8], &[u8], bool),
    ) -> Result<(), HpackError> {
        let Self {
            table,
            size_limit,
            name_scratch,
            value_scratch,
        } = self;
        let mut list_bytes = 0usize;
        let mut emit_counted = |name: &[u8], value: &[u8], never_indexed: bool| {
            list_bytes += name.len() + value.len() + ENTRY_OVERHEAD;
            if list_bytes > max_list_bytes {
                return Err(HpackError::TooLarge);
            }
            emit(name, value, never_indexed);
            Ok(())
        };
        let mut pos = 0;
        let mut seen_field = false;
        while let Some(&first) = block.get(pos) {
            if first & 0x80 != 0 {
                // Indexed header field.
                let index = decode_integer(block, &mut pos, 7)?;
                let (name, value) = lookup(table, index)?;
                emit_counted(name, value, false)?;
            } else if first & 0xC0 == 0x40 {
                // Literal with incremental indexing: the client's table grows.
                let index = decode_integer(block, &mut pos, 6)?;
                let name: Box<[u8]> = if index == 0 {
                    read_string(block, &mut pos, name_scratch)?.into()
                } else {
                    lookup(table, index)?.0.into()
                };
                let value: Box<[u8]> = read_string(block, &mut pos, value_scratch)?.into();
                emit_counted(&name, &value, false)?;
                table.insert(name, value);
            } else if first & 0xE0 == 0x20 {
                // Dynamic table size update: only before the first field (RFC 7541 §4.2).
                if seen_field {
                    return Err(HpackError::BadSizeUpdate);
                }
                let size = decode_integer(block, &mut pos, 5)?;
                if size > *size_limit {
                    return Err(HpackError::BadSizeUpdate);
                }
                table.set_max_size(size);
                continue;
            } else {
                // Literal without indexing (0000) or never indexed (0001).
                let never_indexed = first & 0x10 != 0;
                let index = decode_integer(block, &mut pos, 4)?;
                let name = if index == 0 {
                    read_string(block, &mut pos, name_scratch)?
                } else {
                    lookup(table, index)?.0
                };
                let value = read_string(block, &mut pos, value_scratch)?;
                emit_counted(name, value, never_indexed)?;
            }
            seen_field = true;
        }
        Ok(())
    }
}

#[cfg(test)]
impl Decoder {
    /// Entries in the dynamic table (tests check that rewritten blocks never add any).
    pub(super) fn dynamic_table_len(&self) -> usize {
        self.table.entries.len()
    }
}

/// Decodes an integer with an `prefix_bits`-bit prefix starting at `block[*pos]`.
fn decode_integer(block: &[u8], pos: &mut usize, prefix_bits: u8) -> Result<usize, HpackError> {
    let mask = (1u8 << prefix_bits) - 1;
    let first = block.get(*pos).ok_or(HpackError::Truncated)? & mask;
    *pos += 1;
    if first < mask {
        return Ok(usize::from(first));
    }
    let mut value = usize::from(mask);
    let mut shift = 0u32;
    loop {
        let byte = *block.get(*pos).ok_or(HpackError::Truncated)?;
        *pos += 1;
        value += usize::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        // Four continuation bytes already allow 2^28: more than any header block.
        if shift > 21 {
            return Err(HpackError::IntegerOverflow);
        }
    }
}

/// Reads a string literal; a Huffman-coded one is decoded into `scratch`.
fn read_string<'a>(
    block: &'a [u8],
    pos: &mut usize,
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8], HpackError> {
    let huffman = block.get(*pos).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = decode_integer(block, pos, 7)?;
    let end = pos.checked_add(len).ok_or(HpackError::Truncated)?;
    let raw = block.get(*pos..end).ok_or(HpackError::Truncated)?;
    *pos = end;
    if huffman {
        scratch.clear();
        huffman_decode(raw, scratch)?;
        Ok(scratch)
    } else {
        Ok(raw)
    }
}

/// Appends `value` with an `prefix_bits`-bit prefix; `flags` fills the bits above it.
pub(super) fn encode_integer(out: &mut Vec<u8>, value: usize, prefix_bits: u8, flags: u8) {
    let mask = (1usize << prefix_bits) - 1;
    if value < mask {
        // Fits in the prefix: value < 2^prefix_bits <= 128.
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7F) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

pub(super) fn encode_string(out: &mut Vec<u8>, bytes: &[u8]) {
    encode_integer(out, bytes.len(), 7, 0x00);
    out.extend_from_slice(bytes);
}

/// Appends one "literal header field without indexing" (or "never indexed" when
/// `never_indexed`), naming the field by static index when the table has the name.
/// Nothing is Huffman-coded and no table is touched, so any decoder reads it the same.
pub(super) fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8], never_indexed: bool) {
    let flags = if never_indexed { 0x10 } else { 0x00 };
    match static_name_index(name) {
        Some(index) => encode_integer(out, index, 4, flags),
        None => {
            out.push(flags);
            encode_string(out, name);
        }
    }
    encode_string(out, value);
}

/// Code length in bits of each symbol of HPACK's Huffman code (RFC 7541 Appendix B):
/// 256 byte values, then EOS. The code is canonical, so the lengths define it.
const HUFFMAN_CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0x00
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 0x10
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // 0x20
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // 0x30
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // 0x40
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 0x50
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // 0x60
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 0x70
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 0x80
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 0x90
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 0xa0
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 0xb0
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 0xc0
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 0xd0
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 0xe0
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 0xf0
    30, // EOS
];

const EOS: u16 = 256;
const MAX_CODE_LENGTH: usize = 30;

/// The canonical code in the form a decoder walks: for each length, the first code of
/// that length, how many codes have it, and where its symbols start in `symbols`.
struct CanonicalCode {
    symbols: [u16; 257],
    first_code: [u32; MAX_CODE_LENGTH + 1],
    count: [u32; MAX_CODE_LENGTH + 1],
    offset: [u16; MAX_CODE_LENGTH + 1],
}

const fn canonical_code() -> CanonicalCode {
    let mut code = CanonicalCode {
        symbols: [0; 257],
        first_code: [0; MAX_CODE_LENGTH + 1],
        count: [0; MAX_CODE_LENGTH + 1],
        offset: [0; MAX_CODE_LENGTH + 1],
    };
    let mut next = 0;
    let mut len = 1;
    while len <= MAX_CODE_LENGTH {
        code.offset[len] = next as u16;
        let mut symbol = 0;
        while symbol < 257 {
            if HUFFMAN_CODE_LENGTHS[symbol] as usize == len {
                code.symbols[next] = symbol as u16;
                next += 1;
                code.count[len] += 1;
            }
            symbol += 1;
        }
        code.first_code[len] = (code.first_code[len - 1] + code.count[len - 1]) << 1;
        len += 1;
    }
    code
}

static HUFFMAN: CanonicalCode = canonical_code();

/// Decodes a Huffman-coded string into `out`.
fn huffman_decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let mut code = 0u32;
    let mut len = 0usize;
    for &byte in input {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            let rank = code.wrapping_sub(HUFFMAN.first_code[len]);
            if rank < HUFFMAN.count[len] {
                let symbol = HUFFMAN.symbols[usize::from(HUFFMAN.offset[len]) + rank as usize];
                if symbol == EOS {
                    return Err(HpackError::BadHuffman);
                }
                // Every symbol but EOS is a byte value.
                out.push(symbol as u8);
                code = 0;
                len = 0;
            } else if len == MAX_CODE_LENGTH {
                return Err(HpackError::BadHuffman);
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (the high bits of EOS).
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(HpackError::BadHuffman);
    }
    Ok(())
}

/// Huffman-encodes `input` (tests use it to play a client that compresses strings).
#[cfg(test)]
pub(super) fn huffman_encode(input: &[u8], out: &mut Vec<u8>) {
    let mut codes = [0u32; 257];
    for len in 1..=MAX_CODE_LENGTH {
        let first = usize::from(HUFFMAN.offset[len]);
        for rank in 0..HUFFMAN.count[len] {
            let symbol = HUFFMAN.symbols[first + rank as usize];
            codes[usize::from(symbol)] = HUFFMAN.first_code[len] + rank;
        }
    }
    let mut bits = 0u64;
    let mut pending = 0u32;
    for &byte in input {
        let len = u32::from(HUFFMAN_CODE_LENGTHS[usize::from(byte)]);
        bits = (bits << len) | u64::from(codes[usize::from(byte)]);
        pending += len;
        while pending >= 8 {
            pending -= 8;
            out.push((bits >> pending) as u8);
        }
    }
    if pending > 0 {
        let pad = 8 - pending;
        out.push(((bits << pad) as u8) | ((1u8 << pad) - 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    fn decode_all(
        decoder: &mut Decoder,
        block: &[u8],
    ) -> Result<Vec<(String, String)>, HpackError> {
        let mut fields = Vec::new();
        decoder.decode(block, usize::MAX, |name, value, _| {
            fields.push((
                String::from_utf8(name.to_vec()).unwrap(),
                String::from_utf8(value.to_vec()).unwrap(),
            ));
        })?;
        Ok(fields)
    }

    fn pairs(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rfc_7541_c4_requests_with_huffman_and_the_dynamic_table() {
        let mut decoder = Decoder::new(4096);
        let first = hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff");
        assert_eq!(
            decode_all(&mut decoder, &first).unwrap(),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ])
        );
        assert_eq!(decoder.table.size, 57);
        let second = hex("8286 84be 5886 a8eb 1064 9cbf");
        assert_eq!(
            decode_all(&mut decoder, &second).unwrap(),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ])
        );
        let third = hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf");
        assert_eq!(
            decode_all(&mut decoder, &third).unwrap(),
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ])
        );
        assert_eq!(decoder.table.size, 164);
    }

    #[test]
    fn eviction_follows_the_table_size() {
        // RFC 7541 C.5-style: a 256-byte table holds only a few entries.
        let mut decoder = Decoder::new(256);
        let mut block = Vec::new();
        for i in 0..10 {
            block.clear();
            block.push(0x40);
            encode_string(&mut block, format!("name-{i}").as_bytes());
            encode_string(&mut block, &[b'v'; 40]);
            decode_all(&mut decoder, &block).unwrap();
            assert!(decoder.table.size <= 256);
        }
        // Entries are 6 + 40 + 32 = 78 bytes: three fit, newest first.
        assert_eq!(decoder.table.entries.len(), 3);
        assert_eq!(&*decoder.table.entries[0].0, b"name-9");
        // Index 62 is the newest entry, 64 the oldest kept, 65 is gone.
        let fields = decode_all(&mut decoder, &[0x80 | 62, 0x80 | 64]).unwrap();
        assert_eq!(fields[0].0, "name-9");
        assert_eq!(fields[1].0, "name-7");
        assert_eq!(
            decode_all(&mut decoder, &[0x80 | 65]),
            Err(HpackError::BadIndex)
        );
    }

    #[test]
    fn size_updates_are_honoured_only_at_the_start_and_within_the_limit() {
        let mut decoder = Decoder::new(4096);
        let mut block = vec![0x40];
        encode_string(&mut block, b"k");
        encode_string(&mut block, b"v");
        decode_all(&mut decoder, &block).unwrap();
        // Size 0 then back to 4096 empties the table.
        let mut update = Vec::new();
        encode_integer(&mut update, 0, 5, 0x20);
        encode_integer(&mut update, 4096, 5, 0x20);
        update.push(0x82);
        decode_all(&mut decoder, &update).unwrap();
        assert!(decoder.table.entries.is_empty());
        let mut too_big = Vec::new();
        encode_integer(&mut too_big, 4097, 5, 0x20);
        assert_eq!(
            decode_all(&mut decoder, &too_big),
            Err(HpackError::BadSizeUpdate)
        );
        let mut late = vec![0x82];
        encode_integer(&mut late, 100, 5, 0x20);
        assert_eq!(
            decode_all(&mut decoder, &late),
            Err(HpackError::BadSizeUpdate)
        );
    }

    #[test]
    fn malformed_blocks_are_errors_not_panics() {
        let cases: [(&[u8], HpackError); 6] = [
            (&[0x80], HpackError::BadIndex),
            (
                &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
                HpackError::IntegerOverflow,
            ),
            (&[0x7F], HpackError::Truncated),
            (&[0x00, 0x05, b'a'], HpackError::Truncated),
            // A Huffman string of 5 zero bits "0" followed by 3 zero padding bits.
            (&[0x04, 0x81, 0x00, 0x01, b'v'], HpackError::BadHuffman),
            (
                &[0x04, 0x84, 0xFF, 0xFF, 0xFF, 0xFF],
                HpackError::BadHuffman,
            ),
        ];
        for (block, expected) in cases {
            let mut decoder = Decoder::new(4096);
            assert_eq!(
                decode_all(&mut decoder, block),
                Err(expected),
                "{block:02x?}"
            );
        }
    }

    #[test]
    fn the_header_list_limit_stops_amplification() {
        let mut decoder = Decoder::new(4096);
        let mut block = vec![0x40];
        encode_string(&mut block, b"big");
        encode_string(&mut block, &[b'x'; 3000]);
        decode_all(&mut decoder, &block).unwrap();
        // 100 one-byte references to a 3 KB entry.
        let refs = vec![0x80 | 62; 100];
        let result = decoder.decode(&refs, 64 * 1024, |_, _, _| {});
        assert_eq!(result, Err(HpackError::TooLarge));
    }

    #[test]
    fn huffman_round_trips_every_byte_value() {
        let input: Vec<u8> = (0..=255u8)
            .chain(b"grpc-go/1.26.0 application/grpc".iter().copied())
            .collect();
        let mut coded = Vec::new();
        huffman_encode(&input, &mut coded);
        let mut decoded = Vec::new();
        huffman_decode(&coded, &mut decoded).unwrap();
        assert_eq!(decoded, input);
        // RFC 7541 C.4.1: "www.example.com".
        coded.clear();
        huffman_encode(b"www.example.com", &mut coded);
        assert_eq!(coded, hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff"));
    }

    #[test]
    fn literals_round_trip_and_use_static_names() {
        let mut out = Vec::new();
        encode_literal(&mut out, b":authority", b"127.0.0.1:2379", false);
        assert_eq!(out[0], 0x01, "name by static index 1, without indexing");
        encode_literal(&mut out, b"x-custom", &[b'y'; 300], true);
        encode_literal(&mut out, b"www-authenticate", b"", false);
        let mut decoder = Decoder::new(4096);
        let mut fields = Vec::new();
        decoder
            .decode(&out, usize::MAX, |name, value, never| {
                fields.push((name.to_vec(), value.to_vec(), never));
            })
            .unwrap();
        assert_eq!(
            fields[0],
            (b":authority".to_vec(), b"127.0.0.1:2379".to_vec(), false)
        );
        assert_eq!(fields[1], (b"x-custom".to_vec(), vec![b'y'; 300], true));
        assert_eq!(fields[2], (b"www-authenticate".to_vec(), Vec::new(), false));
        assert!(decoder.table.entries.is_empty());
    }
}
