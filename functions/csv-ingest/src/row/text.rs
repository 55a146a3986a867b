//! How a row stores its four text fields: [`RowText`].

/// How many bytes of text a row keeps inline: Settle's own ids are 36 characters, so a
/// settlement id, payment id, gateway reference and merchant id usually fit.
const INLINE_TEXT: usize = 128;

/// The four text fields of a row, back to back and valid UTF-8: inline when they fit, so
/// that the usual row costs no allocation (a file has millions of rows, and one malloc
/// and free per row were a tenth of parse time), else in one heap allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RowText {
    Inline { len: u8, bytes: [u8; INLINE_TEXT] },
    Heap(Box<str>),
}

impl RowText {
    /// `text` must already be valid UTF-8 (checked once, in [`parse_row`](super::parse_row)).
    pub(super) fn new(text: &str) -> Self {
        match u8::try_from(text.len()) {
            Ok(len) if text.len() <= INLINE_TEXT => {
                let mut bytes = [0u8; INLINE_TEXT];
                bytes[..text.len()].copy_from_slice(text.as_bytes());
                RowText::Inline { len, bytes }
            }
            _ => RowText::Heap(text.into()),
        }
    }

    pub(super) fn as_str(&self) -> &str {
        match self {
            // Copied from a `&str` whole: always valid, and ASCII ids check in a few words.
            RowText::Inline { len, bytes } => std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default(),
            RowText::Heap(text) => text,
        }
    }
}
