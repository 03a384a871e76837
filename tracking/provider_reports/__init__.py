"""The providers' own usage and cost reports, pulled into ``ProviderReportRow``.

``anthropic_report`` and ``openai_report`` read one provider's report for a range of UTC
days into ``ReportRows``; ``services.provider_report_sync`` replaces the stored rows of
those days with them and records the run (``ProviderSyncRun``).
"""
