"""Summary table, figures, LaTeX/Markdown tables and the HTML report."""
