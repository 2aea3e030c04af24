//! The semantic checks of the optional `validate` mode: what the remote-write specifications
//! (1.0 and 2.0) say a receiver must refuse, checked on the decompressed protobuf without
//! building messages.
//!
//! Checked for both versions:
//! - every series has labels, among them a non-empty `__name__`;
//! - label names are non-empty, unique and sorted (byte order); in 1.0 they match
//!   `[a-zA-Z_][a-zA-Z0-9_]*`, in 2.0 (UTF-8 names allowed) they are valid UTF-8; values are
//!   valid UTF-8;
//! - samples and exemplars are well-formed (a `double` value, an `int64` timestamp); exemplar
//!   labels follow the label rules;
//! - histograms: exactly one of integer and float counts (with a zero count of the same kind),
//!   a schema in −4..=8 or −53 (custom buckets, whose bounds must be strictly increasing), spans
//!   whose lengths add up to the number of buckets given, offsets of later spans not negative,
//!   and deltas or counts on each side, never both.
//!
//! 2.0 only: the symbol table starts with the empty string, label references come in pairs and
//! are in range, a name reference is never the empty symbol, and metadata references are in
//! range.
//!
//! The first problem found is returned, with the path of the offending field.

use super::check::Version;
use crate::promql::is_label_name;

/// The first problem of a body, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ValidateError {
    /// The field, such as `timeseries[3].labels[1].name`.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// Where in a body a field is; formatted only when a check fails, so the happy path
/// allocates nothing.
#[derive(Clone, Copy)]
struct Loc<'a> {
    parent: Option<&'a Loc<'a>>,
    name: &'static str,
    index: Option<usize>,
}

impl<'a> Loc<'a> {
    const fn root(name: &'static str, index: Option<usize>) -> Loc<'static> {
        Loc { parent: None, name, index }
    }
    fn field(&'a self, name: &'static str) -> Loc<'a> {
        Loc { parent: Some(self), name, index: None }
    }
    fn item(&'a self, name: &'static str, i: usize) -> Loc<'a> {
        Loc { parent: Some(self), name, index: Some(i) }
    }
    fn at(&self, i: usize) -> Loc<'a> {
        Loc { parent: self.parent, name: self.name, index: Some(i) }
    }
}

impl std::fmt::Display for Loc<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(p) = self.parent {
            write!(f, "{p}.")?;
        }
        f.write_str(self.name)?;
        if let Some(i) = self.index {
            write!(f, "[{i}]")?;
        }
        Ok(())
    }
}

fn err<T>(loc: &Loc<'_>, reason: impl Into<String>) -> Result<T, ValidateError> {
    Err(ValidateError { path: loc.to_string(), reason: reason.into() })
}

/// A field value on the wire.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let b = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The fields of one message, in order.
fn fields<'a>(
    buf: &'a [u8],
    loc: &Loc<'_>,
    mut each: impl FnMut(u64, Value<'a>) -> Result<(), ValidateError>,
) -> Result<(), ValidateError> {
    let mut pos = 0;
    let malformed = || ValidateError { path: loc.to_string(), reason: "malformed protobuf".into() };
    while pos < buf.len() {
        let tag = varint(buf, &mut pos).ok_or_else(malformed)?;
        let v = match tag & 7 {
            0 => Value::Varint(varint(buf, &mut pos).ok_or_else(malformed)?),
            1 => {
                let b: [u8; 8] = buf.get(pos..pos + 8).and_then(|s| s.try_into().ok()).ok_or_else(malformed)?;
                pos += 8;
                Value::Fixed64(u64::from_le_bytes(b))
            }
            5 => {
                buf.get(pos..pos + 4).ok_or_else(malformed)?;
                pos += 4;
                Value::Fixed32
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos).ok_or_else(malformed)?).map_err(|_| malformed())?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len()).ok_or_else(malformed)?;
                let v = Value::Bytes(&buf[pos..end]);
                pos = end;
                v
            }
            _ => return Err(malformed()),
        };
        if tag >> 3 == 0 {
            return Err(malformed());
        }
        each(tag >> 3, v)?;
    }
    Ok(())
}

fn bytes<'a>(v: Value<'a>, loc: &Loc<'_>) -> Result<&'a [u8], ValidateError> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => err(loc, "expected a length-delimited field"),
    }
}

fn fixed64(v: Value<'_>, loc: &Loc<'_>) -> Result<u64, ValidateError> {
    match v {
        Value::Fixed64(x) => Ok(x),
        _ => err(loc, "expected a double"),
    }
}

fn int(v: Value<'_>, loc: &Loc<'_>) -> Result<u64, ValidateError> {
    match v {
        Value::Varint(x) => Ok(x),
        _ => err(loc, "expected an integer"),
    }
}

fn utf8<'a>(b: &'a [u8], loc: &Loc<'_>) -> Result<&'a str, ValidateError> {
    std::str::from_utf8(b).or_else(|_| err(loc, "not valid UTF-8"))
}

/// Packed repeated varints (also accepts them unpacked, one per field).
fn packed_varints(v: Value<'_>, loc: &Loc<'_>, out: &mut Vec<u64>) -> Result<(), ValidateError> {
    match v {
        Value::Varint(x) => out.push(x),
        Value::Bytes(b) => {
            let mut pos = 0;
            while pos < b.len() {
                match varint(b, &mut pos) {
                    Some(x) => out.push(x),
                    None => return err(loc, "malformed packed varints"),
                }
            }
        }
        _ => return err(loc, "expected integers"),
    }
    Ok(())
}

/// How many varints a packed field holds.
fn count_varints(v: Value<'_>, loc: &Loc<'_>) -> Result<usize, ValidateError> {
    match v {
        Value::Varint(_) => Ok(1),
        Value::Bytes(b) => {
            let (mut pos, mut n) = (0, 0);
            while pos < b.len() {
                if varint(b, &mut pos).is_none() {
                    return err(loc, "malformed packed varints");
                }
                n += 1;
            }
            Ok(n)
        }
        _ => err(loc, "expected integers"),
    }
}

fn packed_doubles(v: Value<'_>, loc: &Loc<'_>, out: &mut Vec<f64>) -> Result<(), ValidateError> {
    match v {
        Value::Fixed64(x) => out.push(f64::from_bits(x)),
        Value::Bytes(b) if b.len().is_multiple_of(8) => {
            out.extend(b.chunks_exact(8).map(|c| f64::from_bits(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))));
        }
        _ => return err(loc, "expected doubles"),
    }
    Ok(())
}

/// Checks a series' labels: `(name, value)` pairs in wire order; `loc` is the labels field.
fn check_labels(labels: &[(&str, &str)], loc: &Loc<'_>, version: Version, series: bool) -> Result<(), ValidateError> {
    if series && !labels.iter().any(|(n, v)| *n == "__name__" && !v.is_empty()) {
        return err(loc, "no __name__ label with a value");
    }
    for (i, (name, _)) in labels.iter().enumerate() {
        let at = loc.at(i);
        let name_loc = at.field("name");
        if name.is_empty() {
            return err(&name_loc, "empty label name");
        }
        if version == Version::V1 && !is_label_name(name) {
            return err(&name_loc, format!("{name:?} is not a valid label name"));
        }
        if i > 0 {
            let prev = labels[i - 1].0;
            if prev == *name {
                return err(&name_loc, format!("label {name:?} appears twice"));
            }
            if prev.as_bytes() > name.as_bytes() {
                return err(&name_loc, format!("labels are not sorted ({name:?} after {prev:?})"));
            }
        }
    }
    Ok(())
}

fn label_v1<'a>(b: &'a [u8], loc: &Loc<'_>) -> Result<(&'a str, &'a str), ValidateError> {
    let (mut name, mut value) = ("", "");
    fields(b, loc, |f, v| {
        match f {
            1 => name = utf8(bytes(v, loc)?, &loc.field("name"))?,
            2 => value = utf8(bytes(v, loc)?, &loc.field("value"))?,
            _ => {}
        }
        Ok(())
    })?;
    Ok((name, value))
}

fn sample(b: &[u8], loc: &Loc<'_>) -> Result<(), ValidateError> {
    fields(b, loc, |f, v| {
        match f {
            1 => {
                fixed64(v, &loc.field("value"))?;
            }
            2 => {
                int(v, &loc.field("timestamp"))?;
            }
            _ => {}
        }
        Ok(())
    })
}

#[derive(Default)]
struct Side {
    spans: Vec<(i64, u64)>,
    deltas: usize,
    counts: usize,
}

fn zigzag(x: u64) -> i64 {
    ((x >> 1) as i64) ^ -((x & 1) as i64)
}

fn span(b: &[u8], loc: &Loc<'_>) -> Result<(i64, u64), ValidateError> {
    let (mut offset, mut length) = (0i64, 0u64);
    fields(b, loc, |f, v| {
        match f {
            1 => offset = zigzag(int(v, &loc.field("offset"))?),
            2 => length = int(v, &loc.field("length"))?,
            _ => {}
        }
        Ok(())
    })?;
    Ok((offset, length))
}

fn histogram(b: &[u8], loc: &Loc<'_>) -> Result<(), ValidateError> {
    let (mut count_int, mut count_float, mut zero_int, mut zero_float) = (false, false, false, false);
    let mut schema = 0i64;
    let (mut neg, mut pos) = (Side::default(), Side::default());
    let mut custom = Vec::new();
    fields(b, loc, |f, v| {
        match f {
            1 => {
                int(v, &loc.field("count_int"))?;
                count_int = true;
            }
            2 => {
                fixed64(v, &loc.field("count_float"))?;
                count_float = true;
            }
            3 => {
                fixed64(v, &loc.field("sum"))?;
            }
            5 => {
                fixed64(v, &loc.field("zero_threshold"))?;
            }
            4 => schema = zigzag(int(v, &loc.field("schema"))?),
            6 => {
                int(v, &loc.field("zero_count_int"))?;
                zero_int = true;
            }
            7 => {
                fixed64(v, &loc.field("zero_count_float"))?;
                zero_float = true;
            }
            8 | 11 => {
                let (side, name) = if f == 8 { (&mut neg, "negative_spans") } else { (&mut pos, "positive_spans") };
                let at = loc.item(name, side.spans.len());
                side.spans.push(span(bytes(v, &at)?, &at)?);
            }
            9 | 12 => {
                let (side, name) = if f == 9 { (&mut neg, "negative_deltas") } else { (&mut pos, "positive_deltas") };
                side.deltas += count_varints(v, &loc.field(name))?;
            }
            10 | 13 => {
                let (side, name) = if f == 10 { (&mut neg, "negative_counts") } else { (&mut pos, "positive_counts") };
                side.counts += match v {
                    Value::Fixed64(_) => 1,
                    Value::Bytes(b) if b.len().is_multiple_of(8) => b.len() / 8,
                    _ => return err(&loc.field(name), "expected doubles"),
                };
            }
            15 => {
                int(v, &loc.field("timestamp"))?;
            }
            16 => packed_doubles(v, &loc.field("custom_values"), &mut custom)?,
            _ => {}
        }
        Ok(())
    })?;
    if count_int && count_float {
        return err(loc, "both an integer and a float count");
    }
    if (count_int && zero_float) || (count_float && zero_int) {
        return err(loc, "the zero count's kind differs from the count's");
    }
    if !(-4..=8).contains(&schema) && schema != -53 {
        return err(&loc.field("schema"), format!("schema {schema} is neither -4..=8 nor -53 (custom buckets)"));
    }
    if schema == -53 && (custom.is_empty() || custom.windows(2).any(|w| w[0] >= w[1] || w[0].is_nan())) {
        return err(&loc.field("custom_values"), "custom bucket bounds must be given and strictly increasing");
    }
    for (name, spans, side) in [("negative", "negative_spans", &neg), ("positive", "positive_spans", &pos)] {
        if side.deltas > 0 && side.counts > 0 {
            return err(loc, format!("{name} buckets given both as deltas and as counts"));
        }
        if let Some(i) = side.spans.iter().skip(1).position(|(o, _)| *o < 0) {
            return err(&loc.item(spans, i + 1), "a later span has a negative offset");
        }
        let expected: u64 = side.spans.iter().map(|(_, l)| l).sum();
        let given = (side.deltas + side.counts) as u64;
        if expected != given {
            return err(loc, format!("{name} spans cover {expected} buckets but {given} are given"));
        }
    }
    Ok(())
}

/// Counters of a series' repeated fields, for their paths.
#[derive(Default)]
struct Seen {
    samples: usize,
    exemplars: usize,
    histograms: usize,
}

impl Seen {
    /// Checks a sample (`samples` field) or a histogram (`histograms` field); `false` for
    /// any other field.
    fn sample_or_histogram(
        &mut self,
        f: u64,
        v: Value<'_>,
        series: &Loc<'_>,
        (samples, histograms): (u64, u64),
    ) -> Result<bool, ValidateError> {
        if f == samples {
            let at = series.item("samples", self.samples);
            sample(bytes(v, &at)?, &at)?;
            self.samples += 1;
        } else if f == histograms {
            let at = series.item("histograms", self.histograms);
            histogram(bytes(v, &at)?, &at)?;
            self.histograms += 1;
        } else {
            return Ok(false);
        }
        Ok(true)
    }
}

/// An exemplar's value (field 2) and timestamp (field 3); other fields are the caller's.
fn exemplar_scalar(f: u64, v: Value<'_>, at: &Loc<'_>) -> Result<(), ValidateError> {
    match f {
        2 => {
            fixed64(v, &at.field("value"))?;
        }
        3 => {
            int(v, &at.field("timestamp"))?;
        }
        _ => {}
    }
    Ok(())
}

/// Checks a decompressed remote-write body of `version`.
///
/// # Errors
/// The first [`ValidateError`].
pub fn validate_body(body: &[u8], version: Version) -> Result<(), ValidateError> {
    match version {
        Version::V1 => validate_v1(body),
        Version::V2 => validate_v2(body),
    }
}

fn validate_v1(body: &[u8]) -> Result<(), ValidateError> {
    let request = Loc::root("request", None);
    let mut n = 0usize;
    let mut labels = Vec::new();
    fields(body, &request, |f, v| {
        if f != 1 {
            return Ok(());
        }
        let series = Loc::root("timeseries", Some(n));
        n += 1;
        labels.clear();
        let mut seen = Seen::default();
        fields(bytes(v, &series)?, &series, |f, v| {
            if seen.sample_or_histogram(f, v, &series, (2, 4))? {
                return Ok(());
            }
            match f {
                1 => {
                    let at = series.item("labels", labels.len());
                    labels.push(label_v1(bytes(v, &at)?, &at)?);
                }
                3 => {
                    let at = series.item("exemplars", seen.exemplars);
                    let mut el = Vec::new();
                    fields(bytes(v, &at)?, &at, |f, v| {
                        if f == 1 {
                            let l = at.item("labels", el.len());
                            el.push(label_v1(bytes(v, &l)?, &l)?);
                        }
                        exemplar_scalar(f, v, &at)
                    })?;
                    check_labels(&el, &at.field("labels"), Version::V1, false)?;
                    seen.exemplars += 1;
                }
                _ => {}
            }
            Ok(())
        })?;
        check_labels(&labels, &series.field("labels"), Version::V1, true)
    })
}

fn refs_to_labels<'a>(
    refs: &[u64],
    symbols: &[&'a str],
    loc: &Loc<'_>,
    out: &mut Vec<(&'a str, &'a str)>,
) -> Result<(), ValidateError> {
    out.clear();
    if !refs.len().is_multiple_of(2) {
        return err(loc, "label references must come in name/value pairs");
    }
    let sym = |r: u64, i: usize| -> Result<&'a str, ValidateError> {
        match usize::try_from(r).ok().and_then(|r| symbols.get(r).copied()) {
            Some(s) => Ok(s),
            None => err(&loc.at(i), format!("symbol reference {r} is out of range ({} symbols)", symbols.len())),
        }
    };
    for (i, pair) in refs.chunks_exact(2).enumerate() {
        out.push((sym(pair[0], 2 * i)?, sym(pair[1], 2 * i + 1)?));
    }
    Ok(())
}

fn validate_v2(body: &[u8]) -> Result<(), ValidateError> {
    let request = Loc::root("request", None);
    let mut symbols: Vec<&str> = Vec::new();
    // symbols may follow the series on the wire: collect them first
    fields(body, &request, |f, v| {
        if f == 4 {
            let at = Loc::root("symbols", Some(symbols.len()));
            symbols.push(utf8(bytes(v, &at)?, &at)?);
        }
        Ok(())
    })?;
    if symbols.first().is_some_and(|s| !s.is_empty()) {
        return err(&Loc::root("symbols", Some(0)), "the first symbol must be the empty string");
    }
    let mut n = 0usize;
    let (mut refs, mut labels) = (Vec::new(), Vec::new());
    fields(body, &request, |f, v| {
        if f != 5 {
            return Ok(());
        }
        let series = Loc::root("timeseries", Some(n));
        n += 1;
        refs.clear();
        let mut seen = Seen::default();
        fields(bytes(v, &series)?, &series, |f, v| {
            if seen.sample_or_histogram(f, v, &series, (2, 3))? {
                return Ok(());
            }
            match f {
                1 => packed_varints(v, &series.field("labels_refs"), &mut refs)?,
                4 => {
                    let at = series.item("exemplars", seen.exemplars);
                    let mut er = Vec::new();
                    fields(bytes(v, &at)?, &at, |f, v| {
                        if f == 1 {
                            packed_varints(v, &at.field("labels_refs"), &mut er)?;
                        }
                        exemplar_scalar(f, v, &at)
                    })?;
                    let mut el = Vec::new();
                    refs_to_labels(&er, &symbols, &at.field("labels_refs"), &mut el)?;
                    check_labels(&el, &at.field("labels"), Version::V2, false)?;
                    seen.exemplars += 1;
                }
                5 => {
                    let at = series.field("metadata");
                    fields(bytes(v, &at)?, &at, |f, v| {
                        if f == 3 || f == 4 {
                            let field = at.field(if f == 3 { "help_ref" } else { "unit_ref" });
                            let r = int(v, &field)?;
                            if usize::try_from(r).map_or(true, |r| r >= symbols.len()) {
                                return err(
                                    &field,
                                    format!("symbol reference {r} is out of range ({} symbols)", symbols.len()),
                                );
                            }
                        }
                        Ok(())
                    })?;
                }
                _ => {}
            }
            Ok(())
        })?;
        refs_to_labels(&refs, &symbols, &series.field("labels_refs"), &mut labels)?;
        check_labels(&labels, &series.field("labels"), Version::V2, true)
    })
}

#[cfg(test)]
mod tests;
