"""Report generation service (medxiaohe.report.v1.ReportService)."""
