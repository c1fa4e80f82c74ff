//! Checks of a drawn figure for tests, here and in the op that writes figures
//! (`ablate-ops`' `report.plot` tests, with the `test-support` feature): the SVG's elements,
//! the PNG's header, colours as the SVG spells them.

use std::path::Path;

use super::draw::RGBColor;

pub fn hex(c: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

/// The `<tag …>` elements of `svg` whose attributes contain `attr` (all of them for "").
pub fn count(svg: &str, tag: &str, attr: &str) -> usize {
    svg.split('<')
        .filter(|el| el.starts_with(&format!("{tag} ")))
        .filter(|el| el.split('>').next().is_some_and(|a| a.contains(attr)))
        .count()
}

/// Reads `plot.svg` (checked to be one well-formed-looking `<svg>` document) and checks
/// `plot.png` has the PNG signature and `size`.
pub fn read_outputs(dir: &Path, size: (u32, u32)) -> String {
    let svg = std::fs::read_to_string(dir.join("plot.svg")).expect("plot.svg exists");
    assert!(svg.trim_start().starts_with("<svg"), "{}", &svg[..60]);
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<svg").count(), 1);
    let png = std::fs::read(dir.join("plot.png")).expect("plot.png exists");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((w, h), size);
    svg
}
