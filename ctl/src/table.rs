//! The ASCII tables etcdctl's `-w table` prints (olekukonko/tablewriter with
//! right-aligned cells): `+---+` rules, centred upper-case headers, and cells
//! wider than 30 columns wrapped at spaces.

const MAX_CELL_WIDTH: usize = 30;

/// Renders a header and rows the way etcdctl's table printer does.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let titles: Vec<String> = header.iter().map(|h| title(h)).collect();
    let wrapped: Vec<Vec<Vec<String>>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| wrap(cell)).collect())
        .collect();

    let columns = titles.len();
    let mut widths: Vec<usize> = titles.iter().map(|t| width(t)).collect();
    for row in &wrapped {
        for (i, lines) in row.iter().enumerate().take(columns) {
            for line in lines {
                widths[i] = widths[i].max(width(line));
            }
        }
    }

    let mut out = String::new();
    let rule = {
        let mut r = String::from("+");
        for w in &widths {
            r.push_str(&"-".repeat(w + 2));
            r.push('+');
        }
        r.push('\n');
        r
    };
    out.push_str(&rule);
    out.push('|');
    for (t, w) in titles.iter().zip(&widths) {
        out.push(' ');
        out.push_str(&pad_center(t, *w));
        out.push_str(" |");
    }
    out.push('\n');
    out.push_str(&rule);
    for row in &wrapped {
        let height = row.iter().map(Vec::len).max().unwrap_or(1).max(1);
        for line_no in 0..height {
            out.push('|');
            for (i, w) in widths.iter().enumerate() {
                let text = row
                    .get(i)
                    .and_then(|lines| lines.get(line_no))
                    .map(String::as_str)
                    .unwrap_or("");
                out.push(' ');
                out.push_str(&pad_left(text, *w));
                out.push_str(" |");
            }
            out.push('\n');
        }
    }
    out.push_str(&rule);
    out
}

fn title(name: &str) -> String {
    name.replace(['_', '.'], " ").trim().to_uppercase()
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn pad_center(s: &str, w: usize) -> String {
    let gap = w.saturating_sub(width(s));
    let left = gap / 2;
    format!("{}{}{}", " ".repeat(left), s, " ".repeat(gap - left))
}

fn pad_left(s: &str, w: usize) -> String {
    format!("{}{}", " ".repeat(w.saturating_sub(width(s))), s)
}

/// Splits a cell into lines: at newlines, and greedily at spaces when wider
/// than the maximum cell width (a single longer word stays whole).
fn wrap(cell: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for raw in cell.split('\n') {
        if width(raw) <= MAX_CELL_WIDTH {
            lines.push(raw.to_owned());
            continue;
        }
        let mut current = String::new();
        for word in raw.split_whitespace() {
            if !current.is_empty() && width(&current) + 1 + width(word) > MAX_CELL_WIDTH {
                lines.push(std::mem::take(&mut current));
            }
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(word);
        }
        lines.push(current);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_table_matches_etcdctl() {
        let table = render(
            &[
                "ID",
                "Status",
                "Name",
                "Peer Addrs",
                "Client Addrs",
                "Is Learner",
            ],
            &[vec![
                "2e1259d415f2a040".into(),
                "started".into(),
                "ref".into(),
                "http://127.0.0.1:23800".into(),
                "http://127.0.0.1:23790".into(),
                "false".into(),
            ]],
        );
        let expected = "\
+------------------+---------+------+------------------------+------------------------+------------+
|        ID        | STATUS  | NAME |       PEER ADDRS       |      CLIENT ADDRS      | IS LEARNER |
+------------------+---------+------+------------------------+------------------------+------------+
| 2e1259d415f2a040 | started |  ref | http://127.0.0.1:23800 | http://127.0.0.1:23790 |      false |
+------------------+---------+------+------------------------+------------------------+------------+
";
        assert_eq!(table, expected);
    }

    #[test]
    fn long_cells_wrap_at_spaces() {
        assert_eq!(
            wrap("aaaaaaaaaa bbbbbbbbbb cccccccccc dddd"),
            vec!["aaaaaaaaaa bbbbbbbbbb", "cccccccccc dddd"]
        );
        assert_eq!(wrap(&"x".repeat(40)), vec!["x".repeat(40)]);
    }
}
