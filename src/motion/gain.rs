//! Gain reference: a per-pixel multiplicative correction of the raw frames (counting
//! cameras save the frames uncorrected, with the gain image beside them), read from MRC or
//! TIFF, rotated/flipped to match the frames, and multiplied into every frame.
//!
//! Rotation and flip follow MotionCor2's `-RotGain`/`-FlipGain` and RELION's
//! `--gain_rot`/`--gain_flip` codes: rotation `0` none, `1` 90°, `2` 180°, `3` 270°,
//! counter-clockwise as the image is displayed with its first row at the bottom (MRC / IMOD
//! display, `y` up); flip `0` none, `1` upside down (about the horizontal axis: row `y` →
//! `ny − 1 − y`), `2` left to right (about the vertical axis: column `x` → `nx − 1 − x`). The
//! rotation is applied first, then the flip (as MotionCor2 does). In array terms (`[y, x]`,
//! `ny × nx`), rotation 1 maps the input pixel `(x, y)` to `(x', y') = (ny − 1 − y, x)` of an
//! `nx × ny` (rows × columns) output.

use crate::io::mrc;
use crate::{Error, Result};
use ndarray::{Array2, Array3, ArrayView2, Axis};
use std::path::{Path, PathBuf};

/// How to orient the gain reference to the frames (module docs for the convention).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GainTransform {
    /// Quarter turns counter-clockwise, 0–3 (`--gain_rot` / `-RotGain`).
    pub rotate: u8,
    /// 0 none, 1 upside down, 2 left to right (`--gain_flip` / `-FlipGain`).
    pub flip: u8,
}

impl GainTransform {
    /// Check the codes; errors are [`Error::Config`] naming `gain_rot`/`gain_flip`.
    pub fn validate(&self) -> Result<()> {
        if self.rotate > 3 {
            return Err(Error::Config(format!(
                "gain_rot = {}: use 0 (none), 1 (90°), 2 (180°) or 3 (270°, counter-clockwise)",
                self.rotate
            )));
        }
        if self.flip > 2 {
            return Err(Error::Config(format!(
                "gain_flip = {}: use 0 (none), 1 (upside down) or 2 (left to right)",
                self.flip
            )));
        }
        Ok(())
    }
}

/// Read a gain reference image `[y, x]`: MRC (`.mrc`, one section) or TIFF (`.tif`/`.tiff`,
/// one page). Errors name the file: other extensions, several sections/pages, non-finite
/// values.
pub fn read_gain(path: &Path) -> Result<Array2<f32>> {
    let ext = super::movie::extension(path);
    let img = match ext.as_str() {
        "mrc" | "mrcs" | "st" => {
            let m = mrc::read(path)?.data;
            if m.dim().0 != 1 {
                return Err(Error::bad_input(
                    path,
                    "sections",
                    format!(
                        "{} sections: a gain reference must be one image (nz = 1)",
                        m.dim().0
                    ),
                ));
            }
            m.index_axis_move(Axis(0), 0)
        }
        "tif" | "tiff" => super::tif::read_tiff_image(path)?,
        _ => {
            return Err(Error::bad_input(
                path,
                "file type",
                format!("gain reference extension {ext:?}: give an MRC (.mrc) or TIFF (.tif)"),
            ))
        }
    };
    if img.iter().any(|v| !v.is_finite()) {
        return Err(Error::bad_input(
            path,
            "values",
            "NaN/Inf in the gain reference: replace those pixels (e.g. by 1 or the mean)",
        ));
    }
    Ok(img)
}

/// The gain `[y, x]` rotated then flipped by `t` (module docs). Errors: invalid codes.
pub fn transform_gain(gain: ArrayView2<f32>, t: GainTransform) -> Result<Array2<f32>> {
    t.validate()?;
    let (ny, nx) = gain.dim();
    // rotation: out[y', x'] = in[y, x] with (x', y') the CCW-rotated (x, y) in a y-up frame
    let rot = match t.rotate {
        0 => gain.to_owned(),
        1 => Array2::from_shape_fn((nx, ny), |(yp, xp)| gain[[ny - 1 - xp, yp]]),
        2 => Array2::from_shape_fn((ny, nx), |(yp, xp)| gain[[ny - 1 - yp, nx - 1 - xp]]),
        _ => Array2::from_shape_fn((nx, ny), |(yp, xp)| gain[[xp, nx - 1 - yp]]),
    };
    let mut out = rot;
    match t.flip {
        1 => out.invert_axis(Axis(0)),
        2 => out.invert_axis(Axis(1)),
        _ => {}
    }
    Ok(out.as_standard_layout().to_owned())
}

/// [`read_gain`] then [`transform_gain`].
pub fn load_gain(path: &Path, t: GainTransform) -> Result<Array2<f32>> {
    transform_gain(read_gain(path)?.view(), t)
}

/// Multiply every frame of `frames` (`[frame, y, x]`) by `gain` (`[y, x]`, already oriented).
/// `gain_name` names the gain in errors. Errors: [`Error::BadInput`] when the shapes differ
/// (suggesting a 90°/270° rotation when the gain is the frames' transpose).
pub fn apply_gain(frames: &mut Array3<f32>, gain: ArrayView2<f32>, gain_name: &str) -> Result<()> {
    let (_, ny, nx) = frames.dim();
    let (gy, gx) = gain.dim();
    if (gy, gx) != (ny, nx) {
        let hint = if (gx, gy) == (ny, nx) {
            "the gain is the frames' size transposed: rotate it by 90° or 270° (gain_rot = 1 or 3)"
        } else {
            "give the gain reference recorded with this camera mode and binning"
        };
        return Err(Error::bad_input(
            gain_name,
            "image size",
            format!("gain is {gx}×{gy} but the frames are {nx}×{ny}: {hint}"),
        ));
    }
    for mut f in frames.axis_iter_mut(Axis(0)) {
        f *= &gain;
    }
    Ok(())
}

/// A gain reference, oriented to the frames, with the file it came from (for errors).
#[derive(Clone, Debug)]
pub struct Gain {
    /// Gain `[y, x]`, multiplied into every frame.
    pub image: Array2<f32>,
    /// The file, as given.
    pub path: PathBuf,
}

impl Gain {
    /// Read `path` and orient it with `t` ([`load_gain`]).
    pub fn load(path: &Path, t: GainTransform) -> Result<Gain> {
        Ok(Gain {
            image: load_gain(path, t)?,
            path: path.to_path_buf(),
        })
    }

    /// Multiply the frames `[frame, y, x]` by the gain (size mismatch: [`Error::BadInput`]
    /// naming the gain file).
    pub fn apply(&self, frames: &mut Array3<f32>) -> Result<()> {
        apply_gain(frames, self.image.view(), &self.path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `g[y, x] = 10·y + x` on 2 rows × 3 columns.
    fn g() -> Array2<f32> {
        Array2::from_shape_fn((2, 3), |(y, x)| (10 * y + x) as f32)
    }

    #[test]
    fn rotations_and_flips_follow_the_motioncor2_codes() {
        let t = |rotate, flip| transform_gain(g().view(), GainTransform { rotate, flip }).unwrap();
        // y up: the bottom row (y = 0) is [0 1 2], the top row [10 11 12]. Rotating 90° CCW
        // puts the right column [2, 12] (bottom→top) on the top row, read right to left
        // → top row (y' = 2) = [12, 2]; the bottom row (y' = 0) = [10, 0].
        let r1 = t(1, 0);
        assert_eq!(r1.dim(), (3, 2));
        assert_eq!(r1.row(2).to_vec(), vec![12.0, 2.0]);
        assert_eq!(r1.row(0).to_vec(), vec![10.0, 0.0]);
        let r2 = t(2, 0);
        assert_eq!(r2.row(0).to_vec(), vec![12.0, 11.0, 10.0]);
        // 270° = three quarter turns = 90° applied three times
        let mut r = g();
        for _ in 0..3 {
            r = transform_gain(r.view(), GainTransform { rotate: 1, flip: 0 }).unwrap();
        }
        assert_eq!(t(3, 0), r);
        // four quarter turns: identity
        let r4 = transform_gain(r.view(), GainTransform { rotate: 1, flip: 0 }).unwrap();
        assert_eq!(r4, g());
        assert_eq!(t(0, 1).row(0).to_vec(), vec![10.0, 11.0, 12.0]);
        assert_eq!(t(0, 2).row(0).to_vec(), vec![2.0, 1.0, 0.0]);
        // rotate first, then flip: 90° then upside down
        assert_eq!(t(1, 1).row(0).to_vec(), vec![12.0, 2.0]);
        assert!(transform_gain(g().view(), GainTransform { rotate: 4, flip: 0 }).is_err());
        assert!(transform_gain(g().view(), GainTransform { rotate: 0, flip: 3 }).is_err());
    }

    /// A known gain: frames = signal / gain (what the camera records) are restored exactly;
    /// MRC and TIFF gains read the same; a transposed gain is refused with the hint.
    #[test]
    fn gain_from_mrc_and_tiff_restores_the_frames() {
        let d = tempfile::tempdir().unwrap();
        let (ny, nx) = (24, 32);
        let gain =
            Array2::from_shape_fn((ny, nx), |(y, x)| 0.5 + ((x * 3 + y * 5) % 7) as f32 / 4.0);
        let signal = Array3::from_shape_fn((3, ny, nx), |(f, y, x)| (f + y + x) as f32 * 4.0);
        let mut raw = signal.clone();
        for mut fr in raw.axis_iter_mut(Axis(0)) {
            fr /= &gain;
        }
        // the file holds the gain rotated by 90° CW (= 270° CCW); gain_rot = 1 undoes it
        let stored = transform_gain(gain.view(), GainTransform { rotate: 3, flip: 0 }).unwrap();
        let mp = d.path().join("gain.mrc");
        mrc::write(
            &mp,
            stored.clone().insert_axis(Axis(0)).view(),
            1.0,
            mrc::MrcKind::ImageStack,
        )
        .unwrap();
        let tp = d.path().join("gain.tif");
        {
            use tiff::encoder::{colortype, TiffEncoder};
            let f = std::fs::File::create(&tp).unwrap();
            let mut enc = TiffEncoder::new(f).unwrap();
            let v: Vec<f32> = stored.iter().copied().collect();
            enc.write_image::<colortype::Gray32Float>(ny as u32, nx as u32, &v)
                .unwrap();
        }
        for p in [&mp, &tp] {
            let e = apply_gain(&mut raw.clone(), read_gain(p).unwrap().view(), "gain")
                .unwrap_err()
                .to_string();
            assert!(e.contains("gain_rot = 1 or 3"), "{e}");
            let g = load_gain(p, GainTransform { rotate: 1, flip: 0 }).unwrap();
            let mut fr = raw.clone();
            apply_gain(&mut fr, g.view(), "gain").unwrap();
            let err = (&fr - &signal)
                .mapv(f32::abs)
                .fold(0.0f32, |a, &b| a.max(b));
            assert!(err < 1e-3, "{}: {err}", p.display());
        }
        let e = read_gain(&d.path().join("g.dm4")).unwrap_err().to_string();
        assert!(e.contains("g.dm4") && e.contains("MRC"), "{e}");
    }
}
