//! The Faster R-CNN box coder with unit weights, as the paper's RetinaNet and torchvision use
//! it: `(dx, dy, dw, dh) = ((cx - cxa) / wa, (cy - cya) / ha, ln(w / wa), ln(h / ha))`, no +1
//! in widths; decoding clamps dw, dh from above at ln(1000 / 16). The paper writes the same
//! code in (ty, tx, th, tw) order; pupil keeps torchvision's order throughout.

pub const BBOX_XFORM_CLIP: f32 = 4.135_166_6; // ln(1000 / 16)

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoxCoder {
    pub weights: [f32; 4],
    pub clip: f32,
}

impl Default for BoxCoder {
    fn default() -> Self {
        BoxCoder {
            weights: [1.0; 4],
            clip: BBOX_XFORM_CLIP,
        }
    }
}

#[inline]
fn centre(b: &[f32; 4]) -> (f32, f32, f32, f32) {
    let w = b[2] - b[0];
    let h = b[3] - b[1];
    (b[0] + 0.5 * w, b[1] + 0.5 * h, w, h)
}

impl BoxCoder {
    pub fn encode(&self, gt: &[f32; 4], anchor: &[f32; 4]) -> [f32; 4] {
        let (cx, cy, w, h) = centre(gt);
        let (ax, ay, aw, ah) = centre(anchor);
        let [wx, wy, ww, wh] = self.weights;
        [
            wx * (cx - ax) / aw,
            wy * (cy - ay) / ah,
            ww * (w / aw).ln(),
            wh * (h / ah).ln(),
        ]
    }

    pub fn decode(&self, d: &[f32; 4], anchor: &[f32; 4]) -> [f32; 4] {
        let (ax, ay, aw, ah) = centre(anchor);
        let [wx, wy, ww, wh] = self.weights;
        let dx = d[0] / wx;
        let dy = d[1] / wy;
        let dw = (d[2] / ww).min(self.clip);
        let dh = (d[3] / wh).min(self.clip);
        let cx = dx * aw + ax;
        let cy = dy * ah + ay;
        let w = dw.exp() * aw;
        let h = dh.exp() * ah;
        [cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h]
    }
}
