//! Movie files of a tilt series: reading one movie (`[frame, y, x]` counts) and finding the
//! movie of every tilt, either from the `.mdoc`'s `SubFramePath` or by matching file names to
//! the tilts (stack index or tilt angle in the name).
//!
//! Formats: MRC / `.mrcs` stacks (`io::mrc`, every mode it reads) and multi-page TIFF
//! (`.tif`/`.tiff`, [`super::tif`]: 8/16/32-bit integer or float grey-scale pages, uncompressed,
//! LZW or Deflate). Paths in errors are the movie's; the fix is named.

use crate::io::mdoc::MdocTilt;
use crate::io::mrc;
use crate::{Error, Result};
use ndarray::Array3;
use std::path::{Path, PathBuf};

/// File-name extensions recognised as movies (lower case).
pub const MOVIE_EXTENSIONS: [&str; 5] = ["mrcs", "mrc", "st", "tif", "tiff"];

/// The MRC extensions among [`MOVIE_EXTENSIONS`].
pub const MRC_EXTENSIONS: [&str; 3] = ["mrcs", "mrc", "st"];

/// Read one movie `[frame, y, x]` (counts, `f32`): MRC for `.mrcs`/`.mrc`/`.st`, TIFF (one
/// frame per page) for `.tif`/`.tiff`. Errors name the file: unknown extension, unreadable
/// or malformed file, unsupported TIFF (field and fix named).
pub fn read_movie(path: &Path) -> Result<Array3<f32>> {
    let ext = extension(path);
    if MRC_EXTENSIONS.contains(&ext.as_str()) {
        return Ok(mrc::read(path)?.data);
    }
    if ext == "tif" || ext == "tiff" {
        return super::tif::read_tiff(path);
    }
    Err(Error::bad_input(
        path,
        "file type",
        format!(
            "extension {ext:?} is not a movie format lamella reads (.mrcs, .mrc, .st, .tif, \
             .tiff; EER is not supported): convert it to MRC (.mrcs) or TIFF"
        ),
    ))
}

pub(crate) fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The movie of every tilt, in stack order (`tilts` sorted by `z_value`).
///
/// For each tilt, in this order: its `SubFramePath` as written when that file exists
/// (absolute, or relative to the `.mdoc`'s directory `mdoc_dir`), else the file name part of
/// `SubFramePath` inside `frames_dir` and then `mdoc_dir`; tilts without `SubFramePath` are
/// matched by file name among the movies of `frames_dir` (else `mdoc_dir`): a name holding
/// the tilt angle as a number with a decimal point (±0.05°, e.g. `TS_01_012_-24.0.mrcs`),
/// else the stack index as its last number without a point (`TS_01_012.mrcs`); exactly one
/// file must match.
///
/// Errors: [`Error::BadInput`] naming the `.mdoc` (`mdoc_path`) and the tilt when no movie or
/// more than one is found.
pub fn locate_movies(
    mdoc_path: &Path,
    tilts: &[MdocTilt],
    frames_dir: Option<&Path>,
) -> Result<Vec<PathBuf>> {
    let mdoc_dir = mdoc_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let search_dir = frames_dir.unwrap_or(&mdoc_dir);
    let mut order: Vec<&MdocTilt> = tilts.iter().collect();
    order.sort_by_key(|t| t.z_value);
    let mut listing: Option<Vec<PathBuf>> = None;
    let mut out = Vec::with_capacity(order.len());
    for t in order {
        let field = format!("[ZValue = {}] SubFramePath", t.z_value);
        if let Some(sub) = &t.sub_frame_path {
            let written = PathBuf::from(sub.replace('\\', "/"));
            let mut cands = vec![if written.is_absolute() {
                written.clone()
            } else {
                mdoc_dir.join(&written)
            }];
            if let Some(f) = &t.sub_frame_file {
                if let Some(d) = frames_dir {
                    cands.push(d.join(f));
                }
                cands.push(mdoc_dir.join(f));
            }
            match cands.iter().find(|p| p.is_file()) {
                Some(p) => out.push(p.clone()),
                None => {
                    return Err(Error::bad_input(
                        mdoc_path,
                        field,
                        format!(
                            "movie {sub:?} not found (looked at {}): copy the frames there or \
                             give the folder that holds them (`frames_dir` / --frames-dir)",
                            cands
                                .iter()
                                .map(|p| p.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ))
                }
            }
            continue;
        }
        let files = match &listing {
            Some(l) => l,
            None => listing.insert(list_movies(search_dir)?),
        };
        out.push(match_by_name(files, t).ok_or_else(|| {
            Error::bad_input(
                mdoc_path,
                field,
                format!(
                    "no SubFramePath and no single movie in {} whose name holds the tilt angle \
                     {} or the index {}: add SubFramePath to the .mdoc or rename the movies \
                     (e.g. NAME_{:03}.mrcs)",
                    search_dir.display(),
                    t.tilt_deg,
                    t.z_value,
                    t.z_value
                ),
            )
        })?);
    }
    Ok(out)
}

/// Movie files (by extension) in `dir`, sorted by name.
fn list_movies(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && MOVIE_EXTENSIONS.contains(&extension(p).as_str()))
        .collect();
    v.sort();
    Ok(v)
}

/// The numbers in a file stem, in order, each with whether it was written with a decimal point
/// (`TS_01_012_-24.0` → (1, no), (12, no), (−24.0, yes): angles have a point, indices not); a `-` counts as
/// a sign only after `_`, `[` or the start.
fn numbers_in(stem: &str) -> Vec<(f64, bool)> {
    let b = stem.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let neg_ok = i == 0 || matches!(b[i - 1], b'_' | b'[' | b' ');
        let start = i;
        if b[i] == b'-' && neg_ok && i + 1 < b.len() && b[i + 1].is_ascii_digit() {
            i += 1;
        }
        if i < b.len() && b[i].is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            let txt = stem[start..i].trim_end_matches('.');
            if let Ok(v) = txt.parse::<f64>() {
                out.push((v, txt.contains('.')));
            }
        } else {
            i = start + 1;
        }
    }
    out
}

/// The single file matching tilt `t` by angle, else by index (see [`locate_movies`]).
fn match_by_name(files: &[PathBuf], t: &MdocTilt) -> Option<PathBuf> {
    let nums: Vec<Vec<(f64, bool)>> = files
        .iter()
        .map(|p| numbers_in(&p.file_stem().unwrap_or_default().to_string_lossy()))
        .collect();
    let single = |hits: Vec<usize>| (hits.len() == 1).then(|| files[hits[0]].clone());
    let by_angle: Vec<usize> = (0..files.len())
        .filter(|&i| {
            nums[i]
                .iter()
                .any(|&(v, point)| point && (v - t.tilt_deg).abs() < 0.05)
        })
        .collect();
    single(by_angle).or_else(|| {
        single(
            (0..files.len())
                .filter(|&i| {
                    nums[i].iter().rev().find(|(_, point)| !point).map(|n| n.0)
                        == Some(t.z_value as f64)
                })
                .collect(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::mrc::MrcKind;

    fn tilt(z: usize, angle: f64, sub: Option<&str>) -> MdocTilt {
        MdocTilt {
            z_value: z,
            tilt_deg: angle,
            dose_e_a2: 3.0,
            pixel_a: None,
            sub_frame_path: sub.map(str::to_string),
            sub_frame_file: sub.and_then(|s| s.rsplit(['\\', '/']).next().map(str::to_string)),
            rotation_angle: None,
            date_time: None,
            num_sub_frames: None,
            prior_record_dose: None,
        }
    }

    #[test]
    fn numbers_in_names() {
        assert_eq!(
            numbers_in("TS_01_012_-24.0"),
            vec![(1.0, false), (12.0, false), (-24.0, true)]
        );
        assert_eq!(numbers_in("a-3_[9.00]"), vec![(3.0, false), (9.0, true)]);
    }

    #[test]
    fn finds_movies_by_subframepath_angle_and_index() {
        let d = tempfile::tempdir().unwrap();
        let frames = d.path().join("frames");
        std::fs::create_dir_all(&frames).unwrap();
        let data = Array3::<f32>::ones((2, 16, 16));
        for f in [
            "ts_000_-3.0.mrcs",
            "ts_001_0.0.mrcs",
            "ts_002_3.0.mrcs",
            "x_007.mrcs",
        ] {
            mrc::write(&frames.join(f), data.view(), 1.0, MrcKind::ImageStack).unwrap();
        }
        let mdoc = d.path().join("ts.mdoc");
        // Windows SubFramePath: found by its file name in frames_dir
        let t = vec![
            tilt(1, 0.0, Some("D:\\data\\ts_001_0.0.mrcs")),
            tilt(0, -3.0, None),
            tilt(2, 3.0, Some("frames/ts_002_3.0.mrcs")),
        ];
        let got = locate_movies(&mdoc, &t, Some(&frames)).unwrap();
        let names: Vec<String> = got
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["ts_000_-3.0.mrcs", "ts_001_0.0.mrcs", "ts_002_3.0.mrcs"]
        );
        // by index (no fractional angle in the name)
        let got = locate_movies(&mdoc, &[tilt(7, 12.0, None)], Some(&frames)).unwrap();
        assert!(got[0].ends_with("x_007.mrcs"));
        let e = locate_movies(&mdoc, &[tilt(5, 40.0, None)], Some(&frames))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ts.mdoc") && e.contains("[ZValue = 5]"), "{e}");
        let e = locate_movies(&mdoc, &[tilt(0, 0.0, Some("nope.tif"))], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.tif") && e.contains("frames_dir"), "{e}");
        let e = read_movie(&d.path().join("a.eer")).unwrap_err().to_string();
        assert!(e.contains("a.eer") && e.contains("file type"), "{e}");
    }
}
