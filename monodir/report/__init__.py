"""Reports: tables (STAR/CSV), figures, HTML report, ChimeraX scripts."""
