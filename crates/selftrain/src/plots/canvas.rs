//! plotters' bitmap backend with pupil's text rendering.
use plotters::prelude::{BitMapBackend, DrawingBackend};
use plotters::style::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};

/// plotters' bitmap backend with text set by pupil-data's rasteriser (DejaVu Sans through
/// ab_glyph, every glyph on the baseline); everything else is the bitmap backend's.
pub(super) struct Canvas<'a>(pub BitMapBackend<'a>);

type Drawn<E> = std::result::Result<(), DrawingErrorKind<E>>;

impl DrawingBackend for Canvas<'_> {
    type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }
    fn ensure_prepared(&mut self) -> Drawn<Self::ErrorType> {
        self.0.ensure_prepared()
    }
    fn present(&mut self) -> Drawn<Self::ErrorType> {
        self.0.present()
    }
    fn draw_pixel(&mut self, p: BackendCoord, c: BackendColor) -> Drawn<Self::ErrorType> {
        self.0.draw_pixel(p, c)
    }
    fn draw_line<S: BackendStyle>(
        &mut self,
        a: BackendCoord,
        b: BackendCoord,
        s: &S,
    ) -> Drawn<Self::ErrorType> {
        self.0.draw_line(a, b, s)
    }
    fn draw_rect<S: BackendStyle>(
        &mut self,
        a: BackendCoord,
        b: BackendCoord,
        s: &S,
        fill: bool,
    ) -> Drawn<Self::ErrorType> {
        self.0.draw_rect(a, b, s, fill)
    }
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        s: &S,
    ) -> Drawn<Self::ErrorType> {
        self.0.draw_path(path, s)
    }
    fn draw_circle<S: BackendStyle>(
        &mut self,
        c: BackendCoord,
        r: u32,
        s: &S,
        fill: bool,
    ) -> Drawn<Self::ErrorType> {
        self.0.draw_circle(c, r, s, fill)
    }
    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        s: &S,
    ) -> Drawn<Self::ErrorType> {
        self.0.fill_polygon(vert, s)
    }

    fn estimate_text_size<T: BackendTextStyle>(
        &self,
        text: &str,
        style: &T,
    ) -> std::result::Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let (w, h) = pupil_data::draw::text_size(text, style.size() as f32);
        Ok((w as u32, h as u32))
    }

    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        pos: BackendCoord,
    ) -> Drawn<Self::ErrorType> {
        let c = style.color();
        let (w, h, cov) = pupil_data::draw::rasterize_text(text, style.size() as f32);
        let (w, h) = (w as i32, h as i32);
        let a = style.anchor();
        let dx = match a.h_pos {
            HPos::Left => 0,
            HPos::Center => -w / 2,
            HPos::Right => -w,
        };
        let dy = match a.v_pos {
            VPos::Top => 0,
            VPos::Center => -h / 2,
            VPos::Bottom => -h,
        };
        let t = style.transform();
        for (k, &v) in cov.iter().enumerate().filter(|(_, v)| **v > 0.0) {
            let (x, y) = t.transform(k as i32 % w + dx, k as i32 / w + dy);
            let colour = BackendColor {
                alpha: c.alpha * v as f64,
                rgb: c.rgb,
            };
            self.0.draw_pixel((pos.0 + x, pos.1 + y), colour)?;
        }
        Ok(())
    }
}
