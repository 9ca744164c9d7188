//! The fleet report as one self-contained HTML page (`check -o html`): a
//! summary, a status grid of every cluster (√ ‼ ×; hover for the failing
//! lines, click for every line with its hint) and an expiry timeline of
//! every certificate the fleet holds, with today and the renewal points
//! marked.
//!
//! No network and no external asset: inline CSS and JS only, and a
//! Content-Security-Policy that forbids loading anything. Every data value
//! (names, messages, hints, subjects) goes through
//! [`html_escaped`](crate::text::html_escaped). Readable at
//! thousands of clusters: the grid wraps, the timeline shows each distinct
//! certificate once (a root held by every cluster is one row naming how
//! many hold it) in a scrolling box.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use time::OffsetDateTime;

use super::{CertRole, ClusterReport, HeldCertificate, Report, Status};
use crate::pki::inspect::rfc3339;
use crate::status::ClusterState;
use crate::text::html_escaped as escape;

const STYLE: &str = r#"
:root { --ok:#1a7f37; --warn:#b26b00; --fail:#cf222e; --muted:#57606a; --line:#d0d7de; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1f2328; background: #fff; }
header { padding: 16px 24px; border-bottom: 1px solid var(--line); background: var(--bg); }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 24px 0 8px; }
main { padding: 0 24px 32px; }
.meta { color: var(--muted); }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 16px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 130px; background: #fff; }
.card b { display: block; font-size: 22px; }
.card.ok b { color: var(--ok); } .card.warn b { color: var(--warn); } .card.fail b { color: var(--fail); }
.toolbar { display: flex; gap: 12px; align-items: center; margin-bottom: 8px; }
.toolbar input[type=search] { padding: 4px 8px; border: 1px solid var(--line); border-radius: 4px; min-width: 220px; }
#grid { display: flex; flex-wrap: wrap; gap: 4px; }
.cell { width: 132px; height: 30px; display: flex; align-items: center; gap: 4px; padding: 0 6px; border-radius: 4px; border: 1px solid transparent; font: 12px/1 ui-monospace, SFMono-Regular, Menlo, monospace; cursor: pointer; overflow: hidden; white-space: nowrap; text-overflow: ellipsis; color: #fff; }
.cell span { overflow: hidden; text-overflow: ellipsis; }
.cell.ok { background: var(--ok); } .cell.warn { background: var(--warn); } .cell.fail { background: var(--fail); }
.cell.selected { outline: 3px solid #0969da; outline-offset: 1px; }
.cell.hidden { display: none; }
#grid.dense { gap: 2px; }
#grid.dense .cell { width: 16px; height: 16px; padding: 0; font-size: 0; border-radius: 2px; }
#detail { margin-top: 12px; border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; background: var(--bg); min-height: 40px; }
#detail ul { list-style: none; padding: 0; margin: 4px 0; }
#detail li { margin: 2px 0; }
.m-ok { color: var(--ok); } .m-warn { color: var(--warn); } .m-fail { color: var(--fail); }
.hint { color: var(--muted); margin-left: 1.6em; display: block; }
.legend { color: var(--muted); font-size: 12px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 12px; vertical-align: middle; }
.timeline { border: 1px solid var(--line); border-radius: 6px; max-height: 65vh; overflow-y: auto; }
.trow { display: grid; grid-template-columns: minmax(220px, 34%) 1fr; align-items: center; min-height: 20px; border-bottom: 1px solid #eaeef2; font-size: 12px; }
.trow.axis { position: sticky; top: 0; background: #fff; z-index: 2; min-height: 24px; border-bottom: 1px solid var(--line); }
.tlabel { padding: 1px 8px; overflow: hidden; white-space: nowrap; text-overflow: ellipsis; }
.track { position: relative; height: 20px; }
.bar { position: absolute; top: 5px; height: 10px; border-radius: 3px; min-width: 2px; }
.bar.root { background: #8250df; } .bar.intermediate { background: #0969da; } .bar.server { background: #1a7f37; } .bar.client { background: #57606a; }
.bar.due { background: var(--warn); } .bar.expired { background: var(--fail); }
.renew { position: absolute; top: 2px; width: 2px; height: 16px; background: #1f2328; }
.today { position: absolute; top: 0; bottom: 0; width: 2px; background: var(--fail); z-index: 1; }
.tick { position: absolute; top: 4px; font-size: 11px; color: var(--muted); transform: translateX(-50%); white-space: nowrap; }
.today-label { position: absolute; top: 4px; font-size: 11px; color: var(--fail); font-weight: 600; transform: translateX(4px); }
"#;

const SCRIPT: &str = r#"
(function () {
  var grid = document.getElementById('grid');
  var detail = document.getElementById('detail');
  var selected = null;
  function show(cell) {
    if (selected) { selected.classList.remove('selected'); }
    selected = cell;
    cell.classList.add('selected');
    var source = document.getElementById('c' + cell.getAttribute('data-i'));
    detail.innerHTML = source ? source.innerHTML : '';
  }
  grid.addEventListener('click', function (e) {
    var cell = e.target.closest('.cell');
    if (cell) { show(cell); }
  });
  grid.addEventListener('keydown', function (e) {
    if (e.key === 'Enter' || e.key === ' ') {
      var cell = e.target.closest('.cell');
      if (cell) { e.preventDefault(); show(cell); }
    }
  });
  var filter = document.getElementById('filter');
  var problemsOnly = document.getElementById('problems');
  function apply() {
    var text = filter.value.toLowerCase();
    var cells = grid.querySelectorAll('.cell');
    for (var i = 0; i < cells.length; i++) {
      var c = cells[i];
      var name = c.getAttribute('data-name');
      var hide = (text && name.indexOf(text) < 0) || (problemsOnly.checked && c.classList.contains('ok'));
      c.classList.toggle('hidden', !!hide);
    }
  }
  filter.addEventListener('input', apply);
  problemsOnly.addEventListener('change', apply);
  var first = grid.querySelector('.cell.fail') || grid.querySelector('.cell.warn');
  if (first) { show(first); }
})();
"#;

fn class(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::Warn => "warn",
        Status::Fail => "fail",
    }
}

/// One distinct certificate of the fleet and who holds it.
struct Distinct<'a> {
    cert: &'a HeldCertificate,
    holders: Vec<&'a str>,
}

fn days(seconds: i64) -> i64 {
    seconds.div_euclid(86_400)
}

/// The report as one HTML page; `now` is marked as today on the timeline.
pub fn render_html(report: &Report, now: OffsetDateTime) -> String {
    let mut out = String::with_capacity(64 * 1024 + report.clusters.len() * 600);
    let title = format!("relayctl fleet report: {}", report.instance);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&title)
    );
    header(&mut out, report);
    out.push_str("<main>\n");
    summary(&mut out, report, now);
    grid(&mut out, report);
    timeline(&mut out, report, now);
    out.push_str("</main>\n");
    let _ = write!(out, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    out
}

fn header(out: &mut String, report: &Report) {
    let _ = write!(
        out,
        "<header>\n<h1>relayctl fleet report: <code>{}</code></h1>\n<div class=\"meta\">{} CA, {} client certificates, authority <code>{}</code>, namespace <code>{}</code>; checked at {}</div>\n</header>\n",
        escape(&report.instance),
        escape(&report.ca_mode.to_string()),
        escape(&report.client_cert_mode.to_string()),
        escape(&report.authority),
        escape(&report.namespace),
        escape(&report.checked_at)
    );
}

fn summary(out: &mut String, report: &Report, now: OffsetDateTime) {
    let mut states: BTreeMap<ClusterState, usize> = BTreeMap::new();
    for cluster in &report.clusters {
        *states.entry(cluster.state()).or_default() += 1;
    }
    let state = |s: ClusterState| states.get(&s).copied().unwrap_or(0);
    let certs: Vec<&HeldCertificate> = report
        .clusters
        .iter()
        .flat_map(|c| &c.certificates)
        .collect();
    let next_expiry = certs.iter().min_by_key(|c| c.not_after);
    let next_renewal = certs
        .iter()
        .filter(|c| c.renewal > now)
        .min_by_key(|c| c.renewal);
    let overdue = certs.iter().filter(|c| c.renewal <= now).count();
    let s = report.summary;
    out.push_str("<section id=\"summary\">\n<h2>Summary</h2>\n<div class=\"cards\">\n");
    let card = |out: &mut String, class: &str, value: String, label: &str| {
        let _ = writeln!(
            out,
            "<div class=\"card {class}\"><b>{}</b>{}</div>",
            escape(&value),
            escape(label)
        );
    };
    card(out, "", report.clusters.len().to_string(), "clusters");
    card(
        out,
        "ok",
        state(ClusterState::Converged).to_string(),
        "all √",
    );
    card(
        out,
        "warn",
        state(ClusterState::Drift).to_string(),
        "with ‼",
    );
    card(
        out,
        "fail",
        (state(ClusterState::Error) + state(ClusterState::Unreachable)).to_string(),
        "with × (unreachable included)",
    );
    card(
        out,
        "",
        format!("{} / {} / {}", s.ok, s.warn, s.fail),
        "checks √ / ‼ / ×",
    );
    if let Some(c) = next_expiry {
        card(
            out,
            if c.not_after <= now { "fail" } else { "" },
            format!("{} d", days((c.not_after - now).whole_seconds())),
            &format!(
                "until the first expiry: {} {} ({})",
                c.role.as_str(),
                c.subject,
                rfc3339(c.not_after)
            ),
        );
    }
    if let Some(c) = next_renewal {
        card(
            out,
            "",
            format!("{} d", days((c.renewal - now).whole_seconds())),
            &format!(
                "until the next renewal: {} {} ({})",
                c.role.as_str(),
                c.subject,
                rfc3339(c.renewal)
            ),
        );
    }
    card(
        out,
        if overdue > 0 { "warn" } else { "ok" },
        overdue.to_string(),
        "certificates past their renewal point",
    );
    out.push_str("</div>\n</section>\n");
}

fn cell_title(cluster: &ClusterReport) -> String {
    let bad: Vec<String> = cluster
        .checks
        .iter()
        .filter(|c| c.status != Status::Ok)
        .map(|c| {
            let mut line = format!("{} {}", c.status.marker(), c.message);
            if let Some(hint) = &c.hint {
                line.push_str("\n    hint: ");
                line.push_str(hint);
            }
            line
        })
        .collect();
    if bad.is_empty() {
        format!(
            "{} ({}): all {} checks passed",
            cluster.name,
            cluster.role,
            cluster.checks.len()
        )
    } else {
        format!("{} ({})\n{}", cluster.name, cluster.role, bad.join("\n"))
    }
}

/// Above this many clusters the grid shows squares without names (a heat
/// map; names on hover and in the detail panel).
pub const DENSE_GRID: usize = 200;

fn grid(out: &mut String, report: &Report) {
    let dense = report.clusters.len() > DENSE_GRID;
    let _ = write!(
        out,
        "<section id=\"clusters\">\n<h2>Clusters ({})</h2>\n<div class=\"toolbar\"><input id=\"filter\" type=\"search\" placeholder=\"filter by name\" aria-label=\"filter clusters by name\"><label><input id=\"problems\" type=\"checkbox\"> only ‼ and ×</label><span class=\"legend\">× first, then ‼, then √; hover a cell for its failing lines, click for every line</span></div>\n<div id=\"grid\" role=\"list\"{}>\n",
        report.clusters.len(),
        if dense { " class=\"dense\"" } else { "" }
    );
    // Problems first: at a thousand clusters they must not hide among the √.
    let mut order: Vec<(usize, &ClusterReport)> = report.clusters.iter().enumerate().collect();
    order.sort_by_key(|(i, c)| (std::cmp::Reverse(c.worst()), *i));
    for (i, cluster) in order {
        let status = cluster.worst();
        let _ = writeln!(
            out,
            "<div class=\"cell {}\" role=\"listitem\" tabindex=\"0\" data-i=\"{i}\" data-name=\"{}\" title=\"{}\">{} <span>{}</span></div>",
            class(status),
            escape(&cluster.name.to_lowercase()),
            escape(&cell_title(cluster)),
            status.marker(),
            escape(&cluster.name)
        );
    }
    out.push_str("</div>\n<div id=\"detail\" aria-live=\"polite\">Click a cluster to see its checks.</div>\n");
    // Every cluster's lines, shown in the detail panel on click.
    for (i, cluster) in report.clusters.iter().enumerate() {
        let _ = write!(
            out,
            "<div hidden id=\"c{i}\"><b>{}</b> ({})<ul>",
            escape(&cluster.name),
            escape(cluster.role.as_str())
        );
        for check in &cluster.checks {
            let _ = write!(
                out,
                "<li><span class=\"m-{}\">{}</span> {} <small class=\"meta\">{}</small>",
                class(check.status),
                check.status.marker(),
                escape(&check.message),
                escape(check.id.as_str())
            );
            if let Some(hint) = &check.hint {
                let _ = write!(out, "<span class=\"hint\">hint: {}</span>", escape(hint));
            }
            out.push_str("</li>");
        }
        out.push_str("</ul></div>\n");
    }
    out.push_str("</section>\n");
}

fn timeline(out: &mut String, report: &Report, now: OffsetDateTime) {
    // Each distinct certificate once, with who holds it.
    let mut distinct: BTreeMap<(&str, CertRole), Distinct<'_>> = BTreeMap::new();
    for cluster in &report.clusters {
        for cert in &cluster.certificates {
            distinct
                .entry((cert.sha256.as_str(), cert.role))
                .or_insert_with(|| Distinct {
                    cert,
                    holders: Vec::new(),
                })
                .holders
                .push(&cluster.name);
        }
    }
    let mut rows: Vec<Distinct<'_>> = distinct.into_values().collect();
    rows.sort_by(|a, b| {
        (a.cert.role, a.cert.not_after, &a.cert.subject).cmp(&(
            b.cert.role,
            b.cert.not_after,
            &b.cert.subject,
        ))
    });
    let _ = write!(
        out,
        "<section id=\"expiry\">\n<h2>Certificate expiry ({} distinct certificates)</h2>\n<div class=\"legend\">bars from notBefore to notAfter<i style=\"background:#8250df\"></i>root<i style=\"background:#0969da\"></i>intermediate<i style=\"background:#1a7f37\"></i>server<i style=\"background:#57606a\"></i>client<i style=\"background:var(--warn)\"></i>past its renewal point<i style=\"background:var(--fail)\"></i>expired<i style=\"background:#1f2328;width:2px\"></i>renewal point<i style=\"background:var(--fail);width:2px\"></i>today</div>\n",
        rows.len()
    );
    if rows.is_empty() {
        out.push_str("<p>No certificate could be read.</p>\n</section>\n");
        return;
    }
    let start = rows
        .iter()
        .map(|r| r.cert.not_before)
        .min()
        .map_or(now, |s| s.min(now));
    let end = rows
        .iter()
        .map(|r| r.cert.not_after)
        .max()
        .map_or(now, |e| e.max(now));
    let span = (end - start).whole_seconds().max(1) as f64;
    let x = |t: OffsetDateTime| -> f64 {
        ((t - start).whole_seconds() as f64 / span * 100.0).clamp(0.0, 100.0)
    };
    let today = x(now);
    out.push_str("<div class=\"timeline\" id=\"timeline\">\n<div class=\"trow axis\"><div class=\"tlabel\"><b>certificate</b> (holders)</div><div class=\"track\">");
    for year in start.year()..=end.year() + 1 {
        let Ok(date) = time::Date::from_calendar_date(year, time::Month::January, 1) else {
            continue;
        };
        let at = date.midnight().assume_utc();
        if at < start || at > end {
            continue;
        }
        let _ = write!(
            out,
            "<span class=\"tick\" style=\"left:{:.3}%\">{year}</span>",
            x(at)
        );
    }
    let _ = writeln!(
        out,
        "<span class=\"today\" style=\"left:{today:.3}%\"></span><span class=\"today-label\" style=\"left:{today:.3}%\">today</span></div></div>"
    );
    for row in &rows {
        let c = row.cert;
        let state = if c.not_after <= now {
            " expired"
        } else if c.renewal <= now {
            " due"
        } else {
            ""
        };
        let holders = match row.holders.as_slice() {
            [one] => (*one).to_owned(),
            many => format!("{} clusters", many.len()),
        };
        let listed: Vec<&str> = row.holders.iter().take(20).copied().collect();
        let more = row.holders.len().saturating_sub(listed.len());
        let title = format!(
            "{} {}\nin {} of {}{}\nnotBefore {}\nnotAfter {}\nrenewal {} ({})\nsha256 {}",
            c.role.as_str(),
            c.subject,
            c.secret,
            listed.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            },
            rfc3339(c.not_before),
            rfc3339(c.not_after),
            rfc3339(c.renewal),
            c.renewal_rule,
            c.sha256
        );
        let (left, right) = (x(c.not_before), x(c.not_after));
        let _ = writeln!(
            out,
            "<div class=\"trow\" title=\"{}\"><div class=\"tlabel\">{} <code>{}</code> ({})</div><div class=\"track\"><span class=\"bar {}{state}\" style=\"left:{left:.3}%;width:{:.3}%\"></span><span class=\"renew\" style=\"left:{:.3}%\"></span><span class=\"today\" style=\"left:{today:.3}%\"></span></div></div>",
            escape(&title),
            escape(c.role.as_str()),
            escape(&c.subject),
            escape(&holders),
            c.role.as_str(),
            (right - left).max(0.0),
            x(c.renewal)
        );
    }
    out.push_str("</div>\n</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_markup_character_is_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(escape("a\u{1b}b"), "a&#x1b;b");
    }
}
