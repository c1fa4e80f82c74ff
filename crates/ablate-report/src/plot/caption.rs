//! A line of text above a finished figure, for publishing: `results/<pipeline>/` says which
//! `--set`/`--matrix` variant a plot came from (#21). The figure in the cache stays as drawn —
//! the same key serves the plain pipeline and a variant whose overrides did not reach it — so
//! the caption is added to the published copy, never to the entry.

use std::path::Path;

use plotters::prelude::*;

use super::draw::{FONT, register_font};

/// Height of the strip the caption is drawn in, in pixels.
const STRIP: u32 = 26;
const SIZE: u32 = 14;

/// Writes `src` (a `.svg` or `.png` that `report.plot` drew) to `dest` with `caption` centred
/// in a strip above it; the figure widens when the caption is wider.
pub fn caption_figure(src: &Path, dest: &Path, caption: &str) -> Result<(), String> {
    match src.extension().and_then(|e| e.to_str()) {
        Some("svg") => caption_svg(src, dest, caption),
        Some("png") => caption_png(src, dest, caption),
        _ => Err(format!(
            "cannot caption `{}`: not an SVG or PNG figure",
            src.display()
        )),
    }
}

/// About the width of `caption` at [`SIZE`] in DejaVu Sans, with a margin.
fn caption_width(caption: &str) -> u32 {
    caption.chars().count() as u32 * 8 + 24
}

fn caption_svg(src: &Path, dest: &Path, caption: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(src)
        .map_err(|e| format!("failed to read `{}`: {e}", src.display()))?;
    let bad = || format!("`{}` is not an SVG that ablate drew", src.display());
    // plotters writes `<svg width="W" height="H" viewBox="0 0 W H" …>` on the first line.
    let (head, body) = text.split_once('\n').ok_or_else(bad)?;
    let attr = |name: &str| -> Option<u32> {
        let start = head.find(&format!(" {name}=\""))? + name.len() + 3;
        head[start..].split('"').next()?.parse().ok()
    };
    let (w, h) = attr("width").zip(attr("height")).ok_or_else(bad)?;
    let body = body.trim_end().strip_suffix("</svg>").ok_or_else(bad)?;
    let width = w.max(caption_width(caption));
    let height = h + STRIP;
    let escaped = caption
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let out = format!(
        "<svg width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" \
         xmlns=\"http://www.w3.org/2000/svg\">\n\
         <rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"#FFFFFF\"/>\n\
         <text x=\"{}\" y=\"{}\" font-family=\"DejaVu Sans, sans-serif\" font-size=\"{SIZE}\" \
         text-anchor=\"middle\" fill=\"#000000\">{escaped}</text>\n\
         <g transform=\"translate(0,{STRIP})\">\n{body}</g>\n</svg>\n",
        width / 2,
        STRIP - 8,
    );
    std::fs::write(dest, out).map_err(|e| format!("failed to write `{}`: {e}", dest.display()))
}

fn caption_png(src: &Path, dest: &Path, caption: &str) -> Result<(), String> {
    let figure = image::open(src)
        .map_err(|e| format!("failed to read `{}`: {e}", src.display()))?
        .to_rgb8();
    let (w, h) = figure.dimensions();
    let width = w.max(caption_width(caption));
    let height = h + STRIP;
    let mut out = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    image::imageops::replace(&mut out, &figure, 0, i64::from(STRIP));
    register_font();
    {
        let mut raw = out.as_flat_samples_mut();
        let buf = raw.as_mut_slice();
        let root = BitMapBackend::with_buffer(buf, (width, height)).into_drawing_area();
        let style =
            (FONT, SIZE)
                .into_font()
                .color(&BLACK)
                .pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Center,
                ));
        root.draw_text(caption, &style, ((width / 2) as i32, (STRIP / 2) as i32))
            .and_then(|()| root.present())
            .map_err(|e| format!("failed to caption `{}`: {e}", src.display()))?;
    }
    out.save_with_format(dest, image::ImageFormat::Png)
        .map_err(|e| format!("failed to write `{}`: {e}", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::super::data::{Point, Series, XAxis};
    use super::super::draw::{LineFigure, Spread, save};
    use super::*;

    /// A figure drawn by the op, captioned: taller by the strip, the figure below it, the
    /// caption's text in the SVG and dark pixels in the PNG's strip only where text is.
    #[test]
    fn a_caption_adds_a_strip_above_the_figure() {
        let dir = tempfile::tempdir().unwrap();
        let p = |x: f64| Point {
            x,
            mean: x * x,
            std: None,
        };
        let fig = LineFigure {
            title: "acc vs lr".into(),
            legend_title: None,
            x_name: "lr".into(),
            y_name: "acc".into(),
            x_axis: XAxis::Numeric,
            series: vec![Series {
                name: None,
                points: vec![p(1.0), p(2.0), p(3.0)],
            }],
            log_x: false,
            log_y: false,
            spread: Spread::Bars,
            size: (480, 320),
        };
        save(&fig, dir.path(), "plot").unwrap();
        let caption = "(set: epochs=3; matrix: seed=0)";

        let svg = dir.path().join("captioned.svg");
        caption_figure(&dir.path().join("plot.svg"), &svg, caption).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        let plain = std::fs::read_to_string(dir.path().join("plot.svg")).unwrap();
        assert!(text.contains(&format!(">{caption}</text>")), "{text}");
        let (w, h) = fig_size(&plain);
        assert!(
            text.starts_with(&format!(
                "<svg width=\"{w}\" height=\"{}\" viewBox=\"0 0 {w} {}\"",
                h + STRIP,
                h + STRIP
            )),
            "{}",
            &text[..200]
        );
        assert!(text.contains(&format!("<g transform=\"translate(0,{STRIP})\">")));

        let png = dir.path().join("captioned.png");
        caption_figure(&dir.path().join("plot.png"), &png, caption).unwrap();
        let before = image::open(dir.path().join("plot.png")).unwrap().to_rgb8();
        let after = image::open(&png).unwrap().to_rgb8();
        assert_eq!(after.dimensions(), (w, h + STRIP));
        // The figure, moved down by the strip.
        for (x, y, p) in before.enumerate_pixels() {
            assert_eq!(after.get_pixel(x, y + STRIP), p, "pixel ({x}, {y})");
        }
        // The caption is drawn: dark pixels in the strip.
        let dark = (0..w)
            .flat_map(|x| (0..STRIP).map(move |y| (x, y)))
            .filter(|&(x, y)| after.get_pixel(x, y).0.iter().all(|&c| c < 128))
            .count();
        assert!(dark > 50, "{dark} dark pixels in the caption strip");

        assert!(
            caption_figure(&dir.path().join("plot.md"), &png, caption)
                .unwrap_err()
                .contains("not an SVG or PNG")
        );
    }

    fn fig_size(svg: &str) -> (u32, u32) {
        let head = svg.lines().next().unwrap();
        let num = |name: &str| -> u32 {
            let start = head.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            head[start..].split('"').next().unwrap().parse().unwrap()
        };
        (num("width"), num("height"))
    }
}
