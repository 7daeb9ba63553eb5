"""The report's charts, read from the figures' data: every row of the hour chart shows its own rhythm,
the windows chart marks open windows, counts carry thousands separators, codes are explained."""

import pytest

from sfcrime.glossary import labelled
from sfcrime.report.charts import calls_by_hour_figure, windows_figure


@pytest.fixture(autouse=True)
def close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def test_each_row_of_calls_by_hour_is_scaled_to_its_own_peak():
    busy = [1000 + 100 * h for h in range(24)]   # Passing Call: about 100 times the others
    quiet = [10 if h < 12 else 20 for h in range(24)]
    figure = calls_by_hour_figure({"Passing Call": busy, "22500e": quiet})
    shares = figure.axes[0].images[0].get_array()
    assert shares.max(axis=1).tolist() == [1.0, 1.0]  # on one scale the quiet row was flat: 0.003 to 0.006
    assert shares[1, 0] == 0.5 and shares[1, 23] == 1.0
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert labels == ["Passing Call\n(peak 3,300 calls)", f"{labelled('22500e')}\n(peak 20 calls)"]
    assert "Vehicle Code 22500(e)" in labels[1]


def test_the_windows_chart_draws_the_top_types_per_window_and_marks_the_open_ones():
    windows = {"length": "1 hour", "slide": "1 hour", "recent": {"crime_types": ["Passing Call", "Poss"], "windows": [
        {"start": f"2018-12-31 {h:02d}:00", "end": f"2018-12-31 {h + 1:02d}:00", "final": h < 20,
         "calls": 3000 + h, "counts": [2000 + h, 10 * h]} for h in range(18, 23)]}}
    figure = windows_figure(windows)
    ax = figure.axes[0]
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    assert lines == {"Passing Call": [2018, 2019, 2020, 2021, 2022], "Poss (code, meaning unknown)": [180, 190, 200, 210, 220]}
    assert len(ax.patches) == 3  # the open windows 20:00, 21:00, 22:00 are shaded
    assert "open: counts may still grow" in [t.get_text() for t in ax.get_legend().get_texts()]
    figure.canvas.draw()
    assert any("," in t.get_text() for t in ax.get_yticklabels())  # 2,000 not 2000
