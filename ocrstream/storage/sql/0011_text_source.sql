-- Where a page's text came from (issue 20): 'pdf-text' (the PDF's own text layer, read page by page
-- under OCRSTREAM_PDF_TEXT) or 'ocr'; NULL for pages stored before this column. Per region too.
ALTER TABLE pages ADD COLUMN text_source text CHECK (text_source IN ('pdf-text', 'ocr'));
ALTER TABLE regions ADD COLUMN source text CHECK (source IN ('pdf-text', 'ocr'));
