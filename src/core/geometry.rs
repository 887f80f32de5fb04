//! Geometry: rotation matrices, Euler angles (RELION ZYZ, Dynamo ZXZ), and the per-tilt
//! geometry that turns a tilt series into projection matrices.
//!
//! Conventions (DESIGN §2):
//! - Rotation matrices are active and right-handed and left-multiply column vectors
//!   `(x, y, z)`: `rot_y(a) = [[cos a, 0, sin a], [0, 1, 0], [-sin a, 0, cos a]]`.
//! - A specimen point `p` (Å, relative to the tomogram centre, voxel `(nx/2, ny/2, nz/2)`)
//!   lands in tilt image `i` at pixel
//!   `(u, v) = (nx_img/2, ny_img/2) + [Rz(axis)·Ry(tilt)·Rx(x_tilt)·p]_xy / pixel + shift / pixel`.
//!   This is RELION-5's `rlnTomoProjX/Y/Z/W` model (`zrot = axis`, `ytilt = tilt`,
//!   `xtilt = x_tilt`, shifts `rlnTomoX/YShiftAngst`) and the one of the independent simulator
//!   in `shared/data/sim-independent` (beam along −z, images seen from the source, x right,
//!   y up, image content translated by `+shift`).
//! - The depth of `p` along the beam in tilt `i` is `[R·p]_z` (Å, +z towards the source);
//!   defocus at that depth is `defocus − depth` (underfocus positive).

use serde::{Deserialize, Serialize};

/// 3×3 matrix, row-major: `m[row][col]`.
pub type Mat3 = [[f64; 3]; 3];

/// Identity matrix.
pub const IDENTITY: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

/// Active right-handed rotation about +X by `deg` degrees.
pub fn rot_x(deg: f64) -> Mat3 {
    let (s, c) = deg.to_radians().sin_cos();
    [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]
}

/// Active right-handed rotation about +Y by `deg` degrees.
pub fn rot_y(deg: f64) -> Mat3 {
    let (s, c) = deg.to_radians().sin_cos();
    [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]
}

/// Active right-handed rotation about +Z by `deg` degrees.
pub fn rot_z(deg: f64) -> Mat3 {
    let (s, c) = deg.to_radians().sin_cos();
    [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
}

/// Matrix product `a · b`.
pub fn matmul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut r = [[0.0; 3]; 3];
    for (i, row) in r.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    r
}

/// Transpose (the inverse of a rotation).
pub fn transpose(a: &Mat3) -> Mat3 {
    let mut r = [[0.0; 3]; 3];
    for (i, row) in r.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = a[j][i];
        }
    }
    r
}

/// `m · v` for a column vector `v = (x, y, z)`.
pub fn apply(m: &Mat3, v: [f64; 3]) -> [f64; 3] {
    [
        m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
        m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
        m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2],
    ]
}

/// Largest absolute element difference between two matrices.
pub fn max_abs_diff(a: &Mat3, b: &Mat3) -> f64 {
    let mut m: f64 = 0.0;
    for i in 0..3 {
        for j in 0..3 {
            m = m.max((a[i][j] - b[i][j]).abs());
        }
    }
    m
}

/// RELION's Euler matrix `A(rot, tilt, psi)` (degrees, ZYZ):
/// `A = Rz(−psi)·Ry(−tilt)·Rz(−rot) = (Rz(rot)·Ry(tilt)·Rz(psi))ᵀ`.
///
/// `A` rotates the reference onto the particle: `particle(x) = reference(Aᵀ·x)` (RELION's
/// projector samples the reference at `Aᵀ·(x, y, 0)`). This is lamella's particle pose.
pub fn euler_zyz_to_matrix(rot: f64, tilt: f64, psi: f64) -> Mat3 {
    transpose(&matmul(&matmul(&rot_z(rot), &rot_y(tilt)), &rot_z(psi)))
}

/// Inverse of [`euler_zyz_to_matrix`]: RELION `(rot, tilt, psi)` in degrees, with
/// `tilt ∈ [0, 180]`, `rot, psi ∈ (−180, 180]`; at `tilt = 0` or `180` `rot` is set to 0.
pub fn matrix_to_euler_zyz(a: &Mat3) -> (f64, f64, f64) {
    let cb = a[2][2].clamp(-1.0, 1.0);
    let sb = (a[2][0] * a[2][0] + a[2][1] * a[2][1]).sqrt();
    if sb > 1e-9 {
        let tilt = sb.atan2(cb);
        let rot = a[2][1].atan2(a[2][0]);
        let psi = a[1][2].atan2(-a[0][2]);
        (rot.to_degrees(), tilt.to_degrees(), psi.to_degrees())
    } else if cb > 0.0 {
        // A = Rz(-(rot + psi)): A00 = cos(rot+psi), A01 = sin(rot+psi)
        (0.0, 0.0, a[0][1].atan2(a[0][0]).to_degrees())
    } else {
        // tilt = 180: A00 = -cos(psi-rot), A01 = sin(psi-rot)
        (0.0, 180.0, a[0][1].atan2(-a[0][0]).to_degrees())
    }
}

/// Dynamo's rotation `(tdrot, tilt, narot)` (degrees, ZXZ) as the matrix that rotates the
/// reference onto the particle, i.e. the same role as RELION's `A` ([`euler_zyz_to_matrix`]):
/// `R = (Rz(narot)·Rx(tilt)·Rz(tdrot))ᵀ = Rz(−tdrot)·Rx(−tilt)·Rz(−narot)`.
/// Dynamo's angles rotate the aligned particle onto the reference (extrinsic zxz).
/// Checked with the published equivalent pair Dynamo (−47.273, 1.1777, −132.3) =
/// RELION (137.7, 1.1777, 42.727). Converting Dynamo → RELION is
/// `matrix_to_euler_zyz(&dynamo_zxz_to_matrix(..))`.
pub fn dynamo_zxz_to_matrix(tdrot: f64, tilt: f64, narot: f64) -> Mat3 {
    transpose(&matmul(&matmul(&rot_z(narot), &rot_x(tilt)), &rot_z(tdrot)))
}

/// Inverse of [`dynamo_zxz_to_matrix`]: `(tdrot, tilt, narot)` in degrees, `tilt ∈ [0, 180]`.
pub fn matrix_to_dynamo_zxz(r: &Mat3) -> (f64, f64, f64) {
    // Rᵀ = Rz(narot)·Rx(tilt)·Rz(tdrot) = Rz(a)Rx(b)Rz(c) with
    // M22 = cos b, M02 = sin a sin b, M12 = -cos a sin b, M20 = sin b sin c, M21 = sin b cos c.
    let m = transpose(r);
    let cb = m[2][2].clamp(-1.0, 1.0);
    let sb = (m[0][2] * m[0][2] + m[1][2] * m[1][2]).sqrt();
    let (a, b, c) = if sb > 1e-9 {
        (
            m[0][2].atan2(-m[1][2]),
            sb.atan2(cb),
            m[2][0].atan2(m[2][1]),
        )
    } else if cb > 0.0 {
        // Rz(a + c): M10 = sin(a+c), M00 = cos(a+c)
        (m[1][0].atan2(m[0][0]), 0.0, 0.0)
    } else {
        // Rz(a)Rx(180)Rz(c): M00 = cos(a - c), M10 = sin(a - c)
        (m[1][0].atan2(m[0][0]), std::f64::consts::PI, 0.0)
    };
    (c.to_degrees(), b.to_degrees(), a.to_degrees())
}

/// One tilt image's geometry and acquisition parameters.
///
/// Angles in degrees, lengths in Å, dose in e/Å². See the module docs for the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TiltImage {
    /// Stage tilt angle (rotation about +Y after the x-tilt), degrees.
    pub tilt_deg: f64,
    /// In-plane tilt-axis angle, degrees counter-clockwise from +Y (IMOD, RELION-5 `ZRot`).
    pub axis_deg: f64,
    /// Specimen tilt about +X applied first (RELION-5 `rlnTomoXTilt`), degrees; usually 0.
    pub x_tilt_deg: f64,
    /// Image content translation along image x, Å (aligning needs −shift).
    pub shift_x_a: f64,
    /// Image content translation along image y, Å.
    pub shift_y_a: f64,
    /// Defocus along the astigmatism angle at the tilt axis / image centre, Å (underfocus > 0).
    pub defocus_u_a: f64,
    /// Defocus perpendicular to the astigmatism angle, Å.
    pub defocus_v_a: f64,
    /// Astigmatism angle, degrees from +x (CTFFIND/RELION convention).
    pub astig_angle_deg: f64,
    /// Dose received by this tilt, e/Å².
    pub dose_e_a2: f64,
    /// Dose received before this tilt (RELION `rlnMicrographPreExposure`), e/Å².
    pub pre_exposure_e_a2: f64,
    /// 0-based position in the acquisition order.
    pub acquisition_index: usize,
}

impl TiltImage {
    /// A tilt with the given angle and axis and nothing else set (zero shift, defocus, dose).
    pub fn nominal(tilt_deg: f64, axis_deg: f64) -> Self {
        TiltImage {
            tilt_deg,
            axis_deg,
            x_tilt_deg: 0.0,
            shift_x_a: 0.0,
            shift_y_a: 0.0,
            defocus_u_a: 0.0,
            defocus_v_a: 0.0,
            astig_angle_deg: 0.0,
            dose_e_a2: 0.0,
            pre_exposure_e_a2: 0.0,
            acquisition_index: 0,
        }
    }

    /// Specimen rotation of this tilt: `Rz(axis)·Ry(tilt)·Rx(x_tilt)` (specimen frame -> beam
    /// frame, beam along −z).
    pub fn rotation(&self) -> Mat3 {
        matmul(
            &matmul(&rot_z(self.axis_deg), &rot_y(self.tilt_deg)),
            &rot_x(self.x_tilt_deg),
        )
    }

    /// Mean defocus at the image centre, Å.
    pub fn defocus_mean_a(&self) -> f64 {
        0.5 * (self.defocus_u_a + self.defocus_v_a)
    }

    /// Projection of this tilt for an image of `nx × ny` pixels of `pixel_a` Å (any binning:
    /// pass the binned size and pixel).
    pub fn projection(&self, pixel_a: f64, nx: usize, ny: usize) -> Projection {
        let r = self.rotation();
        let inv = 1.0 / pixel_a;
        let cx = (nx / 2) as f64 + self.shift_x_a * inv;
        let cy = (ny / 2) as f64 + self.shift_y_a * inv;
        Projection {
            m: [
                [r[0][0] * inv, r[0][1] * inv, r[0][2] * inv, cx],
                [r[1][0] * inv, r[1][1] * inv, r[1][2] * inv, cy],
                [r[2][0], r[2][1], r[2][2], 0.0],
            ],
        }
    }

    /// RELION-5 projection matrix (`rlnTomoProjX/Y/Z/W` rows): maps tomogram voxel indices
    /// (tilt-series pixel units, homogeneous) to tilt-image pixels,
    /// `T(img/2 + shift/px) · Rz(axis)·Ry(tilt)·Rx(xtilt) · T(−tomo/2)` with integer halves.
    pub fn relion_matrix(
        &self,
        pixel_a: f64,
        tomo_size: [usize; 3],
        image_size: [usize; 2],
    ) -> [[f64; 4]; 4] {
        let r = self.rotation();
        let c = [
            (tomo_size[0] / 2) as f64,
            (tomo_size[1] / 2) as f64,
            (tomo_size[2] / 2) as f64,
        ];
        let t = [
            (image_size[0] / 2) as f64 + self.shift_x_a / pixel_a,
            (image_size[1] / 2) as f64 + self.shift_y_a / pixel_a,
            0.0,
        ];
        let mut m = [[0.0; 4]; 4];
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] = r[i][j];
            }
            m[i][3] = t[i] - (0..3).map(|k| r[i][k] * c[k]).sum::<f64>();
        }
        m[3][3] = 1.0;
        m
    }

    /// Set angles and shifts from a RELION-5 projection matrix (inverse of
    /// [`TiltImage::relion_matrix`]); other fields are left as they are. Returns an error
    /// message when the 3×3 part is not a rotation.
    pub fn set_from_relion_matrix(
        &mut self,
        m: &[[f64; 4]; 4],
        pixel_a: f64,
        tomo_size: [usize; 3],
        image_size: [usize; 2],
    ) -> std::result::Result<(), String> {
        let r: Mat3 = [
            [m[0][0], m[0][1], m[0][2]],
            [m[1][0], m[1][1], m[1][2]],
            [m[2][0], m[2][1], m[2][2]],
        ];
        let rrt = matmul(&r, &transpose(&r));
        if max_abs_diff(&rrt, &IDENTITY) > 1e-3 {
            return Err(format!(
                "3x3 part is not a rotation (R·Rᵀ deviates from I by {:.2e})",
                max_abs_diff(&rrt, &IDENTITY)
            ));
        }
        // R = Rz(c)·Ry(b)·Rx(a): R20 = -sin b, R21 = cos b sin a, R22 = cos b cos a,
        // R10 = sin c cos b, R00 = cos c cos b.
        let b = (-r[2][0]).clamp(-1.0, 1.0).asin();
        let (a, c) = if b.cos().abs() > 1e-9 {
            (r[2][1].atan2(r[2][2]), r[1][0].atan2(r[0][0]))
        } else {
            (0.0, (-r[0][1]).atan2(r[1][1]))
        };
        self.x_tilt_deg = a.to_degrees();
        self.tilt_deg = b.to_degrees();
        self.axis_deg = c.to_degrees();
        let rebuilt = self.rotation();
        let cen = [
            (tomo_size[0] / 2) as f64,
            (tomo_size[1] / 2) as f64,
            (tomo_size[2] / 2) as f64,
        ];
        let rc = apply(&rebuilt, cen);
        self.shift_x_a = (m[0][3] + rc[0] - (image_size[0] / 2) as f64) * pixel_a;
        self.shift_y_a = (m[1][3] + rc[1] - (image_size[1] / 2) as f64) * pixel_a;
        Ok(())
    }
}

/// An affine projection: rows 0–1 map `(x, y, z, 1)` (Å, specimen frame, about the tomogram
/// centre) to image pixels `(u, v)`; row 2 gives the depth along the beam in Å (+ towards the
/// source).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Projection {
    /// Rows: u, v (pixels), depth (Å).
    pub m: [[f64; 4]; 3],
}

impl Projection {
    /// The projection of a volume whose origin sits at specimen point `d` (Å) of this one:
    /// `P'(p) = P(p + d)` (the translation column gains `M·d`). Used to project sub-volumes
    /// (slabs along Y or Z) centred on their own middle.
    pub fn translated(&self, d: [f64; 3]) -> Projection {
        let mut m = self.m;
        for row in m.iter_mut() {
            row[3] += row[0] * d[0] + row[1] * d[1] + row[2] * d[2];
        }
        Projection { m }
    }

    /// Image position `(u, v)` in pixels of the specimen point `p` (Å).
    pub fn project(&self, p: [f64; 3]) -> [f64; 2] {
        let m = &self.m;
        [
            m[0][0] * p[0] + m[0][1] * p[1] + m[0][2] * p[2] + m[0][3],
            m[1][0] * p[0] + m[1][1] * p[1] + m[1][2] * p[2] + m[1][3],
        ]
    }

    /// Depth of `p` along the beam (Å, + towards the source).
    pub fn depth(&self, p: [f64; 3]) -> f64 {
        let m = &self.m;
        m[2][0] * p[0] + m[2][1] * p[1] + m[2][2] * p[2]
    }
}

/// Optics shared by a tilt series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Optics {
    /// Acceleration voltage, kV.
    pub voltage_kv: f64,
    /// Spherical aberration, mm.
    pub cs_mm: f64,
    /// Amplitude contrast fraction (0–1).
    pub amplitude_contrast: f64,
}

impl Default for Optics {
    fn default() -> Self {
        Optics {
            voltage_kv: 300.0,
            cs_mm: 2.7,
            amplitude_contrast: 0.07,
        }
    }
}

/// The geometry of a whole tilt series: image size and pixel, optics, and one [`TiltImage`]
/// per image in stack order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TiltSeriesGeometry {
    /// Image width in pixels (MRC nx).
    pub nx: usize,
    /// Image height in pixels (MRC ny).
    pub ny: usize,
    /// Pixel size of the stack, Å.
    pub pixel_a: f64,
    /// Defocus handedness: +1 when defocus grows with depth below the tilt axis as modelled
    /// here (`defocus − depth`), −1 when the data are mirrored (RELION `rlnTomoHand`).
    pub hand: f64,
    /// Microscope optics.
    pub optics: Optics,
    /// Per tilt, in stack order.
    pub tilts: Vec<TiltImage>,
}

impl TiltSeriesGeometry {
    /// A series with nominal tilt angles (degrees) about an axis `axis_deg`, nothing else set.
    pub fn from_angles(nx: usize, ny: usize, pixel_a: f64, angles: &[f64], axis_deg: f64) -> Self {
        TiltSeriesGeometry {
            nx,
            ny,
            pixel_a,
            hand: 1.0,
            optics: Optics::default(),
            tilts: angles
                .iter()
                .enumerate()
                .map(|(i, &a)| {
                    let mut t = TiltImage::nominal(a, axis_deg);
                    t.acquisition_index = i;
                    t
                })
                .collect(),
        }
    }

    /// Number of tilts.
    pub fn len(&self) -> usize {
        self.tilts.len()
    }

    /// True when there is no tilt.
    pub fn is_empty(&self) -> bool {
        self.tilts.is_empty()
    }

    /// Projections of every tilt for images binned by `bin` (size `n / bin`, pixel × bin).
    pub fn projections(&self, bin: usize) -> Vec<Projection> {
        let b = bin.max(1);
        self.tilts
            .iter()
            .map(|t| t.projection(self.pixel_a * b as f64, self.nx / b, self.ny / b))
            .collect()
    }

    /// Defocus (mean of U and V, Å) of tilt `i` at specimen point `p` (Å): the centre defocus
    /// minus the point's depth towards the source, times the handedness.
    pub fn defocus_at(&self, i: usize, p: [f64; 3]) -> f64 {
        let t = &self.tilts[i];
        let depth = apply(&t.rotation(), p)[2];
        t.defocus_mean_a() - self.hand * depth
    }

    /// Defocus offset (Å) at image position `(u, v)` (pixels, x and y, of the `nx × ny`
    /// image) of tilt `i`: the defocus at the point of the specimen mid-plane (z = 0) that
    /// projects there, minus the tilt's defocus (0 on the tilt axis through the image of the
    /// tomogram centre; its sign follows `hand`). Used by the simulator's image formation and
    /// the tilt-aware CTF fit.
    pub fn defocus_offset_at(&self, i: usize, u: f64, v: f64) -> f64 {
        let t = &self.tilts[i];
        let px = self.pixel_a;
        let rt = transpose(&t.rotation());
        let dz = apply(&rt, [0.0, 0.0, 1.0])[2];
        let (cx, cy) = (
            (self.nx / 2) as f64 + t.shift_x_a / px,
            (self.ny / 2) as f64 + t.shift_y_a / px,
        );
        let (a, b) = ((u - cx) * px, (v - cy) * px);
        let p0 = apply(&rt, [a, b, 0.0]);
        // p = Rᵀ(a, b, w) on the mid-plane: p0_z + w·dz = 0 (dz = cos tilt > 0 for |tilt| < 90°)
        let w = if dz.abs() > 1e-9 { -p0[2] / dz } else { 0.0 };
        let p = [p0[0] + w * rt[0][2], p0[1] + w * rt[1][2], 0.0];
        self.defocus_at(i, p) - t.defocus_mean_a()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64) / ((1u64 << 53) as f64)
    }

    #[test]
    fn rotations_are_active_right_handed() {
        let p = apply(&rot_y(90.0), [0.0, 0.0, 1.0]);
        assert!((p[0] - 1.0).abs() < 1e-12 && p[2].abs() < 1e-12);
        let p = apply(&rot_z(90.0), [1.0, 0.0, 0.0]);
        assert!((p[1] - 1.0).abs() < 1e-12);
        let p = apply(&rot_x(90.0), [0.0, 1.0, 0.0]);
        assert!((p[2] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn relion_euler_matrix_matches_relion_formula() {
        // RELION's Euler_angles2matrix written out element by element.
        let (rot, tilt, psi) = (30.0f64, 50.0f64, -70.0f64);
        let (sa, ca) = rot.to_radians().sin_cos();
        let (sb, cb) = tilt.to_radians().sin_cos();
        let (sg, cg) = psi.to_radians().sin_cos();
        let want = [
            [cg * cb * ca - sg * sa, cg * cb * sa + sg * ca, -cg * sb],
            [-sg * cb * ca - cg * sa, -sg * cb * sa + cg * ca, sg * sb],
            [sb * ca, sb * sa, cb],
        ];
        assert!(max_abs_diff(&euler_zyz_to_matrix(rot, tilt, psi), &want) < 1e-12);
    }

    #[test]
    fn euler_round_trips_random_angles() {
        let mut s = 42u64;
        for _ in 0..10_000 {
            let rot = lcg(&mut s) * 360.0 - 180.0;
            let tilt = lcg(&mut s) * 180.0;
            let psi = lcg(&mut s) * 360.0 - 180.0;
            let a = euler_zyz_to_matrix(rot, tilt, psi);
            let (r2, t2, p2) = matrix_to_euler_zyz(&a);
            let b = euler_zyz_to_matrix(r2, t2, p2);
            assert!(max_abs_diff(&a, &b) < 1e-9, "{rot} {tilt} {psi}");
            if tilt > 1e-3 && tilt < 180.0 - 1e-3 {
                let d = |x: f64, y: f64| ((x - y + 540.0).rem_euclid(360.0) - 180.0).abs();
                assert!(d(rot, r2) < 1e-6 && (tilt - t2).abs() < 1e-6 && d(psi, p2) < 1e-6);
            }
            let (a1, b1, c1) = matrix_to_dynamo_zxz(&a);
            assert!(max_abs_diff(&dynamo_zxz_to_matrix(a1, b1, c1), &a) < 1e-9);
        }
        // degenerate tilts
        for &(r, t, p) in &[(10.0, 0.0, 20.0), (10.0, 180.0, 20.0)] {
            let a = euler_zyz_to_matrix(r, t, p);
            let (r2, t2, p2) = matrix_to_euler_zyz(&a);
            assert!(max_abs_diff(&a, &euler_zyz_to_matrix(r2, t2, p2)) < 1e-9);
        }
    }

    #[test]
    fn dynamo_to_relion_published_pair() {
        // A published equivalent pair (same reconstruction in both programs).
        let (r, t, p) = matrix_to_euler_zyz(&dynamo_zxz_to_matrix(-47.273, 1.1777, -132.3));
        assert!((r - 137.7).abs() < 1e-3, "{r}");
        assert!((t - 1.1777).abs() < 1e-3, "{t}");
        assert!((p - 42.727).abs() < 1e-3, "{p}");
        let a = euler_zyz_to_matrix(137.7, 1.1777, 42.727);
        let (d0, d1, d2) = matrix_to_dynamo_zxz(&a);
        assert!(
            (d0 + 47.273).abs() < 1e-3 && (d1 - 1.1777).abs() < 1e-3 && (d2 + 132.3).abs() < 1e-3
        );
    }

    #[test]
    fn relion_matrix_round_trip() {
        let mut t = TiltImage::nominal(-47.0, 84.5);
        t.x_tilt_deg = 1.5;
        t.shift_x_a = 12.3;
        t.shift_y_a = -40.0;
        let m = t.relion_matrix(1.667, [4400, 6000, 1400], [4096, 4096]);
        let mut u = TiltImage::nominal(0.0, 0.0);
        u.set_from_relion_matrix(&m, 1.667, [4400, 6000, 1400], [4096, 4096])
            .unwrap();
        assert!((u.tilt_deg - t.tilt_deg).abs() < 1e-9);
        assert!((u.axis_deg - t.axis_deg).abs() < 1e-9);
        assert!((u.x_tilt_deg - t.x_tilt_deg).abs() < 1e-9);
        assert!((u.shift_x_a - t.shift_x_a).abs() < 1e-6);
        assert!((u.shift_y_a - t.shift_y_a).abs() < 1e-6);
    }

    #[test]
    fn projection_of_centre_is_image_centre_plus_shift() {
        let mut t = TiltImage::nominal(30.0, 0.0);
        t.shift_x_a = 20.0;
        let p = t.projection(10.0, 64, 64);
        let uv = p.project([0.0, 0.0, 0.0]);
        assert!((uv[0] - 34.0).abs() < 1e-12 && (uv[1] - 32.0).abs() < 1e-12);
        // a point above the specimen centre (z > 0) moves to +x for a positive tilt
        let uv = p.project([0.0, 0.0, 100.0]);
        assert!(uv[0] > 34.0);
        assert!(p.depth([0.0, 0.0, 100.0]) > 0.0);
    }
}
