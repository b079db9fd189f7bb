//! Reading a message row's packed attachment column.

use super::unpack_attachment;

#[test]
fn packed_attachment_columns_unpack() {
    let sha = "ab".repeat(32);
    let packed = format!("1234 {sha} image/png");
    let attachment = unpack_attachment(7, packed.as_bytes());
    assert_eq!(attachment.as_ref().map(|a| a.size), Some(1234));
    assert_eq!(
        attachment.as_ref().map(|a| a.sha256.as_str()),
        Some(sha.as_str())
    );
    assert_eq!(
        attachment.as_ref().map(|a| a.content_type.as_str()),
        Some("image/png")
    );
    assert_eq!(
        attachment.map(|a| a.url),
        Some("/v1/attachments/7".to_string())
    );
    assert!(unpack_attachment(7, b"x y z").is_none());
    assert!(unpack_attachment(7, b"12").is_none());
}
